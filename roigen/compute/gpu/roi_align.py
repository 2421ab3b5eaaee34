"""RoIAlign on GPUs: the align family's kernels (`_align.py`), and `backward_boxes`, the
gradient with respect to the boxes (one block per box, _box_gradient.py)."""

from __future__ import annotations

from ..common.sample_gradient import align_box_gradient_macro
from ..common.sampling import box_grids
from . import _box_gradient
from ._align import roi_align_kernels

I32 = "int32"


def kernels(spec, schedule) -> dict:
    box_gradient = _box_gradient.box_gradient_kernel(spec, schedule, box_grids(spec, I32),
                                                     align_box_gradient_macro(spec, I32))
    return {**roi_align_kernels(spec, schedule), "backward_boxes": box_gradient}
