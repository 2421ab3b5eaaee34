"""roi_align_rotated / RoIAlignRotated: detectron2's ROIAlignRotated, and mmcv's with
`angle_unit="rad"`."""

from __future__ import annotations

from torch import Tensor

from ..specs import RoIAlignRotatedSpec, output_size_pair
from ._checks import as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def roi_align_rotated(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
                      sampling_ratio: int = -1, aligned: bool = True, angle_unit: str = "deg",
                      clockwise: bool = False, *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """RoIAlign in rotated boxes.

    boxes: Tensor[K, 6] of (batch_index, cx, cy, w, h, angle), or a list of
    Tensor[L, 5] per image (torchvision's CXCYWHR).  The defaults are
    detectron2's ROIAlignRotated: angle in degrees, counter-clockwise, half-pixel
    centres (`aligned`; w, h must then be >= 0).  mmcv's roi_align_rotated is
    `angle_unit="rad"` with its `aligned` and `clockwise` flags.  Samples per bin
    and their average are roi_align's.  Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    return call(RoIAlignRotatedSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, sampling_ratio=sampling_ratio, aligned=aligned, angle_unit=angle_unit,
                clockwise=clockwise, target=target, deterministic=deterministic)


class RoIAlignRotated(OpModule, function=roi_align_rotated):
    """Module form of `roi_align_rotated` (as detectron2's ROIAlignRotated)."""


def oracle(params: dict):
    """None: detectron2 and mmcv build their kernels from source; their published test vectors
    and ROI_OPS.md's identities (tests/test_peer_vectors.py) stand in for them."""
    return None
