"""SPPnet: spatial pyramid pooling over the whole map (spp) and inside boxes (roi_spp)."""

from __future__ import annotations

from torch import Tensor, nn

from ..specs import RoISPPSpec, SPPSpec
from ._checks import as_float, as_levels
from ._registry import call


def spp(input: Tensor, levels=(4, 2, 1), mode: str = "max",
        *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Pool the map into n x n adaptive bins for each n in `levels` (max or avg).

    Returns Tensor[N, C * sum(n*n)]: levels in order, each flattened channel-major,
    as `cat([adaptive_max_pool2d(input, n).flatten(1) for n in levels], 1)`.
    """
    return call(SPPSpec, input, None, levels=as_levels(levels), mode=mode, target=target, deterministic=deterministic)


def roi_spp(input: Tensor, boxes, levels=(4, 2, 1), spatial_scale: float = 1.0,
            *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """SPPnet pooling inside boxes: the RoIPool grids of every level, computed in one
    pass per box.  Returns Tensor[K, C * sum(n*n)], equal to
    `cat([roi_pool(input, boxes, n, spatial_scale).flatten(1) for n in levels], 1)`."""
    return call(RoISPPSpec, input, boxes, spatial_scale=as_float(spatial_scale), levels=as_levels(levels),
                target=target, deterministic=deterministic)


class SpatialPyramidPool(nn.Module):
    def __init__(self, levels=(4, 2, 1), mode: str = "max"):
        super().__init__()
        self.levels, self.mode = tuple(levels), mode

    def forward(self, input: Tensor) -> Tensor:
        return spp(input, self.levels, self.mode)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}"


class RoISPP(nn.Module):
    def __init__(self, levels=(4, 2, 1), spatial_scale: float = 1.0):
        super().__init__()
        self.levels, self.spatial_scale = tuple(levels), spatial_scale

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_spp(input, rois, self.levels, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, spatial_scale={self.spatial_scale}"
