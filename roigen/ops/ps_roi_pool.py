"""ps_roi_pool / PSRoIPool: R-FCN's position-sensitive RoIPool (an average per bin), torchvision's API and results."""

from __future__ import annotations

from torch import Tensor

from ..specs import PSRoIPoolSpec, output_size_pair
from ._checks import as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def ps_roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
                *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Position-sensitive RoIPool, an average per bin (torchvision.ops.ps_roi_pool)."""
    ph, pw = output_size_pair(output_size)
    return call(PSRoIPoolSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, target=target, deterministic=deterministic)


class PSRoIPool(OpModule, function=ps_roi_pool):
    """Module form of `ps_roi_pool` (as `torchvision.ops.PSRoIPool`)."""


def oracle(params: dict):
    import torchvision

    return torchvision.ops.ps_roi_pool
