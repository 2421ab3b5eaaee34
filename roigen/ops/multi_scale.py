"""FPN's multi-scale RoIAlign: each box is RoIAligned on the pyramid level its size picks.

The level assignment is torchvision's LevelMapper, in plain torch; the
per-level RoIAligns are roigen's `roi_align` kernels (one RoIAlignSpec per
level), run inside one custom op so that the data-dependent split of boxes
by level stays out of traced graphs (torch.compile(fullgraph=True) works).

On the CPU there is no split: each level's kernel runs on every box, the
other levels' boxes blanked to batch index -1, which names no image, so
the kernels' (image, channel block) tasks skip them (`skips_rows_without_image`);
every level writes its own rows of one output, and its backward reads the
whole output gradient.  Splitting instead (`nonzero`, an index and a scatter
per level, into a zero-filled output) cost more than the kernels: on a Mask
R-CNN pyramid with 1,024 boxes (benchmarks/bench_fpn.py), forward 34.7 ms
split against 15.2, forward+backward 72.1 against 36.8.  GPU kernels read
the map at each box's batch index, so they keep the split.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import NAMESPACE
from ..backends import backend_for
from ..runtime import channels_last
from ..specs import RoIAlignSpec, output_size_pair
from . import _provider
from ._autocast import autocast_kernel
from ._checks import as_float, boxes_to_rois, check_backward_args, check_input, check_rois
from ._registry import _LIB, _plan, ops_namespace
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
    _check_pyramid(features)
    check_rois(rois, features[0])
    _check_levels(levels, rois, len(features))
    args = (output_size, scales, sampling_ratio, aligned)
    target_of = _provider.select_target(target, features[0].device)
    if _one_pass(target_of, rois.shape[0], [f.shape for f in features]):
        return _forward_one_pass(features, rois, levels, args, target)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(features, scales)):
        index = torch.nonzero(levels == level).flatten()
        if len(index):
            part, _ = ops_namespace().roi_align(feature, rois[index],
                                                 *_align_args(output_size, scale, sampling_ratio, aligned),
                                                 True, target, deterministic)
            out[index] = part
    return out


def _check_pyramid(features) -> None:
    """For callers of the op itself: one batch, channel count, dtype and device across the levels
    (a box indexes an image of every level)."""
    first = features[0]
    for f in features:
        check_input(f)
        if f.shape[:2] != first.shape[:2] or f.dtype != first.dtype or f.device != first.device:
            raise ValueError("features must share batch size, channels, dtype and device")


def _check_levels(levels, rois, count: int) -> None:
    """A level in range for every box: a box with none would leave its output rows unwritten."""
    if not isinstance(levels, Tensor) or levels.dtype != torch.int64 or levels.shape != (rois.shape[0],) \
            or levels.device != rois.device:
        raise ValueError(f"levels must be an int64 Tensor[{rois.shape[0]}] on {rois.device}, one per box")
    if levels.numel() and not bool(((levels >= 0) & (levels < count)).all()):
        raise ValueError(f"levels must lie in [0, {count}), the levels of features")


def _one_pass(target, rows: int, shapes) -> bool:
    """Whether the levels run on every box: kernels that skip blanked rows (the CPU's), and
    some box and every level's map non-empty."""
    return backend_for(target).skips_rows_without_image and rows > 0 and all(math.prod(s) for s in shapes)


def _level_plan(args, level: int, dtype, nhwc: bool, target: str, device):
    """The RoIAlign plan (spec and kernels) of one level (`args`: output_size, scales,
    sampling_ratio, aligned)."""
    output_size, scales, sampling_ratio, aligned = args
    return _plan(RoIAlignSpec, _align_args(output_size, scales[level], sampling_ratio, aligned), dtype, nhwc,
                 target, device)


def _blanked(rois: Tensor, levels: Tensor, level: int) -> Tensor:
    """`rois` with every other level's rows turned into batch index -1 and an empty box, which
    the CPU kernels skip (and whose sample tables stay small)."""
    blank = torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0], dtype=rois.dtype, device=rois.device)
    return torch.where((levels == level)[:, None], rois, blank).contiguous()


def _forward_one_pass(features, rois, levels, args, target: str) -> Tensor:
    counts = torch.bincount(levels, minlength=len(features)).tolist()
    out = None
    for level, feature in enumerate(features):
        if not counts[level]:
            continue
        plan = _level_plan(args, level, feature.dtype, channels_last(feature), target, feature.device)
        spec, kernels = plan.spec, plan.kernels()
        x = feature.to(kernels.dtype)
        x = x if spec.layout == "NHWC" else x.contiguous()
        rows = _blanked(rois.to(kernels.dtype), levels, level)
        shape = spec.kernel_output_shape(x.shape, rows.shape[0])
        part, _ = kernels.forward(x, rows, False, out=None if out is None else out.view(shape))
        out = part if out is None else out
    return out.to(features[0].dtype)


@_multi_scale.register_fake
def _(features, rois, levels, output_size, scales, sampling_ratio, aligned, target="auto", deterministic=False):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], *output_size))


@torch.library.custom_op(f"{NAMESPACE}::multi_scale_roi_align_backward", mutates_args=())
def _multi_scale_backward(grad: Tensor, rois: Tensor, levels: Tensor, sizes: list[int], nhwc: list[bool],
                          output_size: list[int], scales: list[float], sampling_ratio: int, aligned: bool,
                          target: str = "auto", deterministic: bool = False) -> list[Tensor]:
    """d(features) from d(output): `sizes` the levels' (N, C, H, W), flat; `nhwc` their layouts.
    An op of its own (traced graphs see one node), public like every `*_backward`: checked."""
    shapes = [tuple(sizes[4 * i:4 * i + 4]) for i in range(len(nhwc))]
    if len(sizes) != 4 * len(nhwc) or len(scales) != len(nhwc) or not nhwc:
        raise ValueError(f"sizes must hold (N, C, H, W) for each of the {len(nhwc)} levels, scales one scale each")
    if any(shape[:2] != shapes[0][:2] for shape in shapes):
        raise ValueError("the levels' sizes must share batch size and channels")
    check_backward_args(grad, rois, torch.empty(0, dtype=torch.int32, device=grad.device), shapes[0], grad.device)
    _check_levels(levels, rois, len(shapes))
    if tuple(grad.shape) != (rois.shape[0], shapes[0][1], *output_size):
        raise ValueError(f"grad has shape {tuple(grad.shape)}, expected the output's "
                         f"{(rois.shape[0], shapes[0][1], *output_size)}")
    target_of = _provider.select_target(target, grad.device)
    if _one_pass(target_of, rois.shape[0], shapes):
        return _backward_one_pass(grad, rois, levels, shapes, nhwc, (output_size, scales, sampling_ratio, aligned),
                                  target, deterministic)
    no_aux = torch.empty(0, dtype=torch.int32, device=grad.device)
    grads = []
    for level, (shape, scale) in enumerate(zip(shapes, scales)):
        index = torch.nonzero(levels == level).flatten()
        grads.append(ops_namespace().roi_align_backward(
            grad[index], rois[index], no_aux, *shape, nhwc[level],
            *_align_args(output_size, scale, sampling_ratio, aligned), target, deterministic))
    return grads


@_multi_scale_backward.register_fake
def _(grad, rois, levels, sizes, nhwc, output_size, scales, sampling_ratio, aligned, target="auto",
      deterministic=False):
    return [torch.empty(sizes[4 * i:4 * i + 4], dtype=grad.dtype, device=grad.device,
                        memory_format=torch.channels_last if last else torch.contiguous_format)
            for i, last in enumerate(nhwc)]


def _backward_one_pass(grad, rois, levels, shapes, nhwc, args, target: str, deterministic) -> list[Tensor]:
    counts = torch.bincount(levels, minlength=len(shapes)).tolist()
    deterministic = deterministic or torch.are_deterministic_algorithms_enabled()
    no_aux = torch.empty(0, dtype=torch.int32, device=grad.device)
    grads = []
    for level, (shape, last) in enumerate(zip(shapes, nhwc)):
        fmt = torch.channels_last if last else torch.contiguous_format
        if not counts[level]:
            grads.append(torch.zeros(shape, dtype=grad.dtype, device=grad.device).contiguous(memory_format=fmt))
            continue
        kernels = _level_plan(args, level, grad.dtype, last, target, grad.device).kernels()
        rows = _blanked(rois.to(kernels.dtype), levels, level)
        part = kernels.backward(grad.to(kernels.dtype).contiguous(), rows, no_aux, shape, deterministic)
        grads.append(part.to(grad.dtype).contiguous(memory_format=fmt))
    return grads


def _setup_context(ctx, inputs, output):
    features, rois, levels, output_size, scales, sampling_ratio, aligned, target, deterministic = inputs
    ctx.save_for_backward(rois, levels)
    ctx.sizes = [size for f in features for size in f.shape]
    ctx.nhwc = [channels_last(f) for f in features]
    ctx.dtypes = [f.dtype for f in features]
    ctx.args = (output_size, scales, sampling_ratio, aligned, target, deterministic)


def _backward(ctx, grad):
    rois, levels = ctx.saved_tensors
    grads = _multi_scale_backward(grad.to(ctx.dtypes[0]), rois, levels, ctx.sizes, ctx.nhwc, *ctx.args)
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
