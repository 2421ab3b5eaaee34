"""roi_pool / RoIPool: torchvision's API and results."""

from __future__ import annotations

from torch import Tensor, nn

from ..specs import RoIPoolSpec, output_size_pair
from ._checks import as_float as _as_float
from ._registry import call


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
             *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """RoIPool of Fast R-CNN; the same arguments and results as `torchvision.ops.roi_pool`.

    boxes: Tensor[K, 5] of (batch_index, x1, y1, x2, y2), or a list of
    Tensor[L, 4] per image.  Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    return call(RoIPoolSpec, input, boxes, spatial_scale=_as_float(spatial_scale), pooled_height=ph, pooled_width=pw,
                target=target, deterministic=deterministic)


class RoIPool(nn.Module):
    """Module form of `roi_pool` (as `torchvision.ops.RoIPool`)."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


def oracle(params: dict):
    import torchvision

    return torchvision.ops.roi_pool
