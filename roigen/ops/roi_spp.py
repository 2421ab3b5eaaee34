"""roi_spp / RoISPP: SPPnet's pyramid pooling inside boxes, every level in one pass per box."""

from __future__ import annotations

from torch import Tensor

from ..specs import RoISPPSpec
from ._checks import as_float, as_levels
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def roi_spp(input: Tensor, boxes, levels=(4, 2, 1), spatial_scale: float = 1.0,
            *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """SPPnet pooling inside boxes: the RoIPool grids of every level, computed in one
    pass per box.  Returns Tensor[K, C * sum(n*n)], equal to
    `cat([roi_pool(input, boxes, n, spatial_scale).flatten(1) for n in levels], 1)`."""
    return call(RoISPPSpec, input, boxes, spatial_scale=as_float(spatial_scale), levels=as_levels(levels),
                target=target, deterministic=deterministic)


class RoISPP(OpModule, function=roi_spp):
    """Module form of `roi_spp`."""


def oracle(params: dict):
    """torchvision has no RoI-SPP: its `roi_pool` once per level."""
    import torch
    import torchvision

    def composed(input, boxes, levels=(4, 2, 1), spatial_scale=1.0):
        return torch.cat([torchvision.ops.roi_pool(input, boxes, n, spatial_scale).flatten(1) for n in levels], 1)

    return composed
