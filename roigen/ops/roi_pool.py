"""roi_pool / RoIPool: torchvision's API and results."""

from __future__ import annotations

from torch import Tensor

from ..specs import RoIPoolSpec, output_size_pair
from ._checks import as_float as _as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
             *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """RoIPool of Fast R-CNN; the same arguments and results as `torchvision.ops.roi_pool`.

    boxes: Tensor[K, 5] of (batch_index, x1, y1, x2, y2), or a list of
    Tensor[L, 4] per image.  Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    return call(RoIPoolSpec, input, boxes, spatial_scale=_as_float(spatial_scale), pooled_height=ph, pooled_width=pw,
                target=target, deterministic=deterministic)


class RoIPool(OpModule, function=roi_pool):
    """Module form of `roi_pool` (as `torchvision.ops.RoIPool`)."""


def oracle(params: dict):
    import torchvision

    return torchvision.ops.roi_pool
