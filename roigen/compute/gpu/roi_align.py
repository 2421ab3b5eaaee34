"""RoIAlign on GPUs: the align family's kernels (`_align.py`), and `backward_boxes`, the
gradient with respect to the boxes (one block per box, _box_gradient.py)."""

from __future__ import annotations

from ..common.sample_gradient import align_box_gradient_macro
from ..common.sampling import box_rule, sample_grid
from . import _box_gradient
from ._align import roi_align_kernels

I32 = "int32"


def kernels(spec, schedule) -> dict:
    _, extent = box_rule(spec)
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size

    def grids(rois, k):
        return (sample_grid(extent(rois, k, 2), PH, spec.sampling_ratio, dt, I32),
                sample_grid(extent(rois, k, 1), PW, spec.sampling_ratio, dt, I32))

    box_gradient = _box_gradient.box_gradient_kernel(spec, schedule, grids, align_box_gradient_macro(spec, I32))
    return {**roi_align_kernels(spec, schedule), "backward_boxes": box_gradient}
