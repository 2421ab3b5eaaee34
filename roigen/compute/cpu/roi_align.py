"""RoIAlign on the CPU: the align family's kernels (`_align.py`) with RoIAlign's box rule,
and `backward_boxes`, the gradient with respect to the boxes (_box_gradient.py)."""

from __future__ import annotations

from tvm import tirx

from ..common.sample_gradient import align_box_gradient_macro
from ..common.sampling import box_rule, sample_grid
from . import _box_gradient, by_direction
from ._align import roi_align_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_align.align_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def box_gradient_kernel(spec) -> tirx.PrimFunc:
    _, extent = box_rule(spec)
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size

    def grids(rois, k):
        return (sample_grid(extent(rois, k, 2), PH, spec.sampling_ratio, dt),
                sample_grid(extent(rois, k, 1), PW, spec.sampling_ratio, dt))

    return _box_gradient.box_gradient_kernel(spec, grids, align_box_gradient_macro(spec))


def kernels(spec, schedule) -> dict:
    return {**by_direction(spec, schedule, roi_align_kernels), "backward_boxes": box_gradient_kernel(spec)}
