"""FPN's multi-scale RoIAlign: each box is RoIAligned on the pyramid level its size picks.

The level assignment is torchvision's LevelMapper, in plain torch; the
per-level RoIAligns are roigen's `roi_align` kernels (one RoIAlignSpec per
level), run inside one custom op so that the data-dependent split of boxes
by level stays out of traced graphs (torch.compile(fullgraph=True) works).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import NAMESPACE
from ..runtime import channels_last
from ..specs import output_size_pair
from ._autocast import autocast_kernel
from ._checks import as_float, boxes_to_rois, check_input, check_rois
from ._registry import _LIB, ops_namespace
from ._tracing import fx_leaf


def assign_levels(rois: Tensor, scales, canonical_scale: float = 224, canonical_level: int = 4,
                  eps: float = 1e-6) -> Tensor:
    """Index into `scales` of each box's level: floor(k0 + log2(sqrt(area) / s0) + eps), clamped."""
    k_min, k_max = -math.log2(scales[0]), -math.log2(scales[-1])
    area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    levels = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_scale) + eps)
    return (torch.clamp(levels, min=k_min, max=k_max) - k_min).to(torch.int64)


def _align_args(output_size, scale, sampling_ratio, aligned):
    return (float(scale), output_size[0], output_size[1], sampling_ratio, aligned, "avg")


_QUALNAME = f"{NAMESPACE}::multi_scale_roi_align"


@torch.library.custom_op(_QUALNAME, mutates_args=())
def _multi_scale(features: list[Tensor], rois: Tensor, levels: Tensor, output_size: list[int],
                 scales: list[float], sampling_ratio: int, aligned: bool, target: str = "auto",
                 deterministic: bool = False) -> Tensor:
    # The wrapper checks metadata only (it may be traced); the values are checked
    # here, where they are real: a NaN box would otherwise get no level, and zeros.
    check_rois(rois, features[0])
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(features, scales)):
        index = torch.nonzero(levels == level).flatten()
        if len(index):
            part, _ = ops_namespace().roi_align(feature, rois[index],
                                                 *_align_args(output_size, scale, sampling_ratio, aligned),
                                                 True, target, deterministic)
            out[index] = part
    return out


@_multi_scale.register_fake
def _(features, rois, levels, output_size, scales, sampling_ratio, aligned, target="auto", deterministic=False):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], *output_size))


def _setup_context(ctx, inputs, output):
    features, rois, levels, output_size, scales, sampling_ratio, aligned, target, deterministic = inputs
    ctx.save_for_backward(rois, levels)
    ctx.shapes = [(tuple(f.shape), channels_last(f), f.dtype) for f in features]
    ctx.args = (output_size, scales, sampling_ratio, aligned)
    ctx.options = (target, deterministic)


def _backward(ctx, grad):
    rois, levels = ctx.saved_tensors
    output_size, scales, sampling_ratio, aligned = ctx.args
    no_aux = torch.empty(0, dtype=torch.int32, device=grad.device)
    grads = []
    for level, ((shape, nhwc, dtype), scale) in enumerate(zip(ctx.shapes, scales)):
        index = torch.nonzero(levels == level).flatten()
        grads.append(ops_namespace().roi_align_backward(
            grad[index].to(dtype), rois[index], no_aux, *shape, nhwc,
            *_align_args(output_size, scale, sampling_ratio, aligned), *ctx.options))
    return grads, None, None, None, None, None, None, None, None


_multi_scale.register_autograd(_backward, setup_context=_setup_context)
for _device in ("cpu", "cuda"):
    torch.library.impl(_QUALNAME, f"Autocast{_device.upper()}", autocast_kernel(_QUALNAME, _device), lib=_LIB)


@fx_leaf
def multi_scale_roi_align(features, boxes, output_size, scales, sampling_ratio: int = -1,
                          aligned: bool = False, canonical_scale: float = 224,
                          canonical_level: int = 4, *, target: str = "auto",
                          deterministic: bool = False) -> Tensor:
    """FPN RoIAlign over a pyramid: `features` finest first, `scales` their spatial scales.

    Each box goes to level floor(canonical_level + log2(sqrt(area)/canonical_scale) + 1e-6),
    clamped to the levels given (torchvision's MultiScaleRoIAlign).  Rows keep the
    order of `boxes`.  Returns Tensor[K, C, PH, PW].
    """
    if not isinstance(features, (list, tuple)) or not features:
        raise TypeError("features must be a non-empty list of (N, C, H, W) tensors")
    scales = [as_float(s) for s in scales]
    if len(scales) != len(features):
        raise ValueError(f"scales must give one scale per feature map: {len(scales)} for {len(features)}")
    for s in scales:
        if not (isinstance(s, float) and math.isfinite(s) and s > 0):
            raise ValueError(f"scales must be finite numbers > 0, got {scales}")
    for f in features:
        check_input(f)
        if f.shape[:2] != features[0].shape[:2] or f.dtype != features[0].dtype:
            raise ValueError("features must share batch size, channels and dtype")
    if not isinstance(sampling_ratio, int) or isinstance(sampling_ratio, bool):
        raise TypeError(f"sampling_ratio must be int, got {sampling_ratio!r}")
    ph, pw = output_size_pair(output_size)
    rois = boxes_to_rois(boxes)
    check_rois(rois, features[0], values=False)
    levels = assign_levels(rois, scales, canonical_scale, canonical_level)
    return _multi_scale(list(features), rois, levels, [ph, pw], scales, sampling_ratio, bool(aligned),
                        target, deterministic)


def infer_scale(feature: Tensor, original_size) -> float:
    """torchvision's rule: the power of two nearest feature size / image size."""
    approx = float(feature.shape[-2]) / float(original_size[0])
    return 2.0 ** round(math.log2(approx))


@fx_leaf  # one node in an FX trace, as torchvision's module (its scales come from the maps' sizes)
def _pool_pyramid(x, boxes, image_shapes, featmap_names, output_size, sampling_ratio, aligned,
                  canonical_scale, canonical_level) -> Tensor:
    features = [x[name] for name in featmap_names]
    original = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
    scales = [infer_scale(f, original) for f in features]
    return multi_scale_roi_align(features, boxes, output_size, scales, sampling_ratio, aligned,
                                 canonical_scale, canonical_level)


class MultiScaleRoIAlign(nn.Module):
    """torchvision.ops.MultiScaleRoIAlign's interface: forward(x: dict, boxes, image_shapes)."""

    def __init__(self, featmap_names: list[str], output_size, sampling_ratio: int, *,
                 canonical_scale: int = 224, canonical_level: int = 4, aligned: bool = False):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size, self.sampling_ratio, self.aligned = output_size, sampling_ratio, aligned
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        return _pool_pyramid(x, boxes, image_shapes, self.featmap_names, self.output_size, self.sampling_ratio,
                             self.aligned, self.canonical_scale, self.canonical_level)

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}")
