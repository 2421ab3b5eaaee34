"""spp / SpatialPyramidPool: SPPnet's spatial pyramid pooling over the whole map."""

from __future__ import annotations

from torch import Tensor

from ..specs import SPPSpec
from ._checks import as_levels
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def spp(input: Tensor, levels=(4, 2, 1), mode: str = "max",
        *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Pool the map into n x n adaptive bins for each n in `levels` (max or avg).

    Returns Tensor[N, C * sum(n*n)]: levels in order, each flattened channel-major,
    as `cat([adaptive_max_pool2d(input, n).flatten(1) for n in levels], 1)`.
    """
    return call(SPPSpec, input, None, levels=as_levels(levels), mode=mode, target=target, deterministic=deterministic)


class SpatialPyramidPool(OpModule, function=spp, inputs=1):
    """Module form of `spp` (over the whole map: no boxes)."""


def oracle(params: dict):
    """torch's adaptive pooling, once per level."""
    import torch
    import torch.nn.functional as F

    pool = F.adaptive_max_pool2d if params.get("mode", "max") == "max" else F.adaptive_avg_pool2d

    def composed(input, levels=(4, 2, 1), mode="max"):
        return torch.cat([pool(input, n).flatten(1) for n in levels], 1)

    return composed
