"""roi_align / RoIAlign: torchvision's API, plus mmcv's `mode="max"`."""

from __future__ import annotations

from torch import Tensor

from ..specs import RoIAlignSpec, output_size_pair
from ._checks import as_float as _as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False, mode: str = "avg",
              *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """RoIAlign of Mask R-CNN; the same arguments and results as `torchvision.ops.roi_align`.

    boxes: Tensor[K, 5] of (batch_index, x1, y1, x2, y2), or a list of
    Tensor[L, 4] per image.  `mode="max"` takes the max of the bilinear
    samples of each bin instead of their mean.
    Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    return call(RoIAlignSpec, input, boxes, spatial_scale=_as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, sampling_ratio=sampling_ratio, aligned=aligned, mode=mode,
                target=target, deterministic=deterministic)


class RoIAlign(OpModule, function=roi_align):
    """Module form of `roi_align` (as `torchvision.ops.RoIAlign`)."""


def oracle(params: dict):
    """torchvision's roi_align (average mode only: it has no max mode)."""
    import torchvision

    if params.get("mode", "avg") != "avg":
        return None

    def roi_align_avg(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, mode="avg"):
        return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)

    return roi_align_avg
