"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading unit
cells with their exact integrals (common/integral.py) where RoIAlign reads samples,
and `backward_boxes`, the gradient with respect to the boxes.  One task per box (_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx

from ..common.integral import box_gradient_macro, cell_grid, has_area
from ..common.sampling import box_rule
from . import _box_gradient, by_direction
from ._align import align_family_kernels, align_tables

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def box_gradient_kernel(spec) -> tirx.PrimFunc:
    _, extent = box_rule(spec)
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    return _box_gradient.box_gradient_kernel(
        spec, lambda rois, k: (cell_grid(extent(rois, k, 2), PH, dt), cell_grid(extent(rois, k, 1), PW, dt)),
        box_gradient_macro(spec), lambda rois, k: has_area(spec, rois, k))


def kernels(spec, schedule) -> dict:
    return {**by_direction(spec, schedule, prroi_pool_kernels), "backward_boxes": box_gradient_kernel(spec)}
