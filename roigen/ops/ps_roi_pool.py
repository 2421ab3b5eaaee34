"""ps_roi_pool / PSRoIPool: R-FCN's position-sensitive RoIPool (an average per bin), torchvision's API and results."""

from __future__ import annotations

from torch import Tensor, nn

from ..specs import PSRoIPoolSpec, output_size_pair
from ._checks import as_float
from ._registry import call


def ps_roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
                *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Position-sensitive RoIPool, an average per bin (torchvision.ops.ps_roi_pool)."""
    ph, pw = output_size_pair(output_size)
    return call(PSRoIPoolSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, target=target, deterministic=deterministic)


class PSRoIPool(nn.Module):
    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, input: Tensor, rois) -> Tensor:
        return ps_roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


def oracle(params: dict):
    import torchvision

    return torchvision.ops.ps_roi_pool
