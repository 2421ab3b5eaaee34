"""deform_roi_pool / DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack: mmcv's
deformable RoI pooling.

The op's rows carry each box's offsets after its corners (specs.DeformRoIPoolSpec): an
offset is a per-box parameter of the sampling, as a rotated box's angle is, so it goes
through the box machinery whole, and the gradient with respect to the rows is the
gradient with respect to the boxes and the offsets at once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..specs import DeformRoIPoolSpec, output_size_pair
from ._checks import as_float, boxes_to_rois
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf
from .roi_align import roi_align


def _check_offset(offset, rois: Tensor, pooled: tuple[int, int]) -> None:
    shape = (rois.shape[0], 2, *pooled)
    if not isinstance(offset, Tensor):
        raise TypeError(f"offset must be a Tensor[K, 2, PH, PW] or None, got {type(offset).__name__}")
    if tuple(offset.shape) != shape:
        raise ValueError(f"offset must be a Tensor[K, 2, PH, PW] = {shape} (one per box), got "
                         f"{tuple(offset.shape)}")
    if not offset.is_floating_point():
        raise TypeError(f"offset must be a floating-point tensor, got {offset.dtype}")
    if offset.device != rois.device:
        raise ValueError(f"offset is on {offset.device} but boxes are on {rois.device}")
    if not torch.compiler.is_compiling() and offset.numel() and not bool(torch.isfinite(offset).all()):
        raise ValueError("offset holds NaN or infinite values")


@fx_leaf
def deform_roi_pool(input: Tensor, boxes, offset: Tensor | None, output_size, spatial_scale: float = 1.0,
                    sampling_ratio: int = 0, gamma: float = 0.1, *, target: str = "auto",
                    deterministic: bool = False) -> Tensor:
    """Deformable RoI pooling (mmcv's deform_roi_pool): aligned RoIAlign (average of bilinear
    samples, half-pixel centres, no minimum box size) whose bin (ph, pw) is shifted by
    `gamma * box_w * offset[k, 0, ph, pw]` along x and `gamma * box_h * offset[k, 1, ph, pw]`
    along y.

    boxes: Tensor[K, 5] of (batch_index, x1, y1, x2, y2), or a list of Tensor[L, 4].
    offset: Tensor[K, 2, PH, PW] (cast to the boxes' dtype), or None: then it is
    `roi_align(..., aligned=True)`.  Differentiable in the input, the boxes and the offset.
    Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    params = dict(spatial_scale=as_float(spatial_scale), pooled_height=ph, pooled_width=pw,
                  sampling_ratio=sampling_ratio, gamma=as_float(gamma))
    rois = boxes_to_rois(boxes)
    if offset is None:
        if not torch.compiler.is_compiling():
            DeformRoIPoolSpec(**params)  # gamma is checked even where no offset uses it
        return roi_align(input, rois, (ph, pw), params["spatial_scale"], sampling_ratio, aligned=True,
                         target=target, deterministic=deterministic)
    _check_offset(offset, rois, (ph, pw))
    rows = torch.cat([rois, offset.reshape(rois.shape[0], 2 * ph * pw).to(rois.dtype)], 1)
    return call(DeformRoIPoolSpec, input, rows, **params, target=target, deterministic=deterministic)


def split_rows(rows, params: dict) -> tuple:
    """(boxes, offset) of the op's rows, the arguments `deform_roi_pool` takes them from; rows
    of bare boxes (or anything else) pass as boxes with no offset."""
    ph, pw = params["pooled_height"], params["pooled_width"]
    if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[1] != 5 + 2 * ph * pw:
        return rows, None
    return rows[:, :5], rows[:, 5:].reshape(rows.shape[0], 2, ph, pw)


class DeformRoIPool(OpModule, function=deform_roi_pool, inputs=3):
    """Module form of `deform_roi_pool` (as mmcv's DeformRoIPool): `forward(input, rois, offset=None)`."""

    def forward(self, input: Tensor, rois, offset: Tensor | None = None) -> Tensor:
        return self.function(input, rois, offset, *self._attributes())


def _fc(inputs: int, hidden: int, outputs: int, layers: int) -> nn.Sequential:
    """mmcv's offset and mask heads: `layers` Linear layers with ReLUs between, the last
    zero-initialised (no shift, or a mask of 0.5, at the start of training)."""
    sizes = [inputs] + [hidden] * (layers - 1) + [outputs]
    modules = []
    for i in range(layers):
        modules.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < layers - 1:
            modules.append(nn.ReLU(inplace=True))
    nn.init.zeros_(modules[-1].weight)
    nn.init.zeros_(modules[-1].bias)
    return nn.Sequential(*modules)


class DeformRoIPoolPack(DeformRoIPool):
    """mmcv's DeformRoIPoolPack: the offsets are learned from the plain pooled features,
    `offset_fc` = Linear(C*PH*PW, fc), ReLU, Linear(fc, fc), ReLU, Linear(fc, 2*PH*PW)."""

    def __init__(self, output_size, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.output_channels = output_channels
        self.deform_fc_channels = deform_fc_channels
        self.bins = output_size_pair(output_size)
        features = self.bins[0] * self.bins[1] * output_channels
        self.offset_fc = _fc(features, deform_fc_channels, 2 * self.bins[0] * self.bins[1], 3)

    def _pooled(self, input: Tensor, rois) -> tuple[Tensor, Tensor]:
        """(rois as a Tensor[K, 5], the plain pooled features flattened per box)."""
        if input.dim() != 4 or input.shape[1] != self.output_channels:
            raise ValueError(f"input must have output_channels = {self.output_channels} channels, got shape "
                             f"{tuple(input.shape)}")
        rois = boxes_to_rois(rois)
        return rois, self.function(input, rois, None, *self._attributes()).flatten(1)

    def _offset(self, features: Tensor) -> Tensor:
        return self.offset_fc(features).reshape(features.shape[0], 2, *self.bins)

    def forward(self, input: Tensor, rois) -> Tensor:
        rois, features = self._pooled(input, rois)
        return self.function(input, rois, self._offset(features), *self._attributes())


class ModulatedDeformRoIPoolPack(DeformRoIPoolPack):
    """mmcv's ModulatedDeformRoIPoolPack: DeformRoIPoolPack's output times a learned mask,
    `mask_fc` = Linear(C*PH*PW, fc), ReLU, Linear(fc, PH*PW), Sigmoid (0.5 at the start)."""

    def __init__(self, output_size, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1):
        super().__init__(output_size, output_channels, deform_fc_channels, spatial_scale, sampling_ratio, gamma)
        self.mask_fc = nn.Sequential(*_fc(output_channels * self.bins[0] * self.bins[1], deform_fc_channels,
                                          self.bins[0] * self.bins[1], 2), nn.Sigmoid())

    def forward(self, input: Tensor, rois) -> Tensor:
        rois, features = self._pooled(input, rois)
        mask = self.mask_fc(features).reshape(features.shape[0], 1, *self.bins)
        return self.function(input, rois, self._offset(features), *self._attributes()) * mask


def oracle(params: dict):
    """None: mmcv's kernel is CUDA-only; its published test vectors (tests/test_peer_vectors.py)
    and roi_align (offset 0) stand in for it."""
    return None
