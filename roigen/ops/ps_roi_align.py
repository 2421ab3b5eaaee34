"""ps_roi_align / PSRoIAlign: R-FCN's position-sensitive RoIAlign, torchvision's API and results."""

from __future__ import annotations

from torch import Tensor

from ..specs import PSRoIAlignSpec, output_size_pair
from ._checks import as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def ps_roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
                 sampling_ratio: int = -1, *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Position-sensitive RoIAlign (torchvision.ops.ps_roi_align): input has
    C_out * PH * PW channels; returns Tensor[K, C_out, PH, PW]."""
    ph, pw = output_size_pair(output_size)
    return call(PSRoIAlignSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, sampling_ratio=sampling_ratio, target=target, deterministic=deterministic)


class PSRoIAlign(OpModule, function=ps_roi_align):
    """Module form of `ps_roi_align` (as `torchvision.ops.PSRoIAlign`)."""


def oracle(params: dict):
    import torchvision

    return torchvision.ops.ps_roi_align
