"""roi_warp / RoIWarp: MNC's RoIWarp (RoIAlign in a box snapped to the feature-map grid)."""

from __future__ import annotations

from torch import Tensor

from ..specs import RoIWarpSpec, output_size_pair
from ._checks import as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def roi_warp(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
             sampling_ratio: int = -1, mode: str = "avg",
             *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """RoIWarp: box corners rounded to the grid (C round), then RoIAlign's bins and
    bilinear samples (`mode` "avg" or "max").  Returns Tensor[K, C, PH, PW]."""
    ph, pw = output_size_pair(output_size)
    return call(RoIWarpSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, sampling_ratio=sampling_ratio, mode=mode, target=target, deterministic=deterministic)


class RoIWarp(OpModule, function=roi_warp):
    """Module form of `roi_warp`."""


def oracle(params: dict):
    """torchvision's roi_align on boxes snapped beforehand (average mode only)."""
    import torch
    import torchvision

    if params.get("mode", "avg") != "avg":
        return None

    def snapped_roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, mode="avg"):
        rois = boxes.clone()
        v = boxes[:, 1:] * spatial_scale
        rois[:, 1:] = torch.sign(v) * torch.floor(v.abs() + 0.5)  # C round: half away from zero
        return torchvision.ops.roi_align(input, rois, output_size, 1.0, sampling_ratio, False)

    return snapped_roi_align
