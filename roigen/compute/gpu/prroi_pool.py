"""Precise RoI Pooling on GPUs: `_sampled.py`'s kernels, each thread reading the unit cells
of its bin with their exact integrals (common/integral.py), and `backward_boxes`
(one block per box, _box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.integral import box_gradient_macro, cell_corners, cell_grid, has_area
from ..common.sampling import box_rule
from . import _box_gradient
from ._sampled import I32, sampled_kernels


def kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    start, extent = box_rule(spec)
    zero = tirx.const(0.0, dt)

    def grids(rois, k):
        return cell_grid(extent(rois, k, 2), PH, dt, I32), cell_grid(extent(rois, k, 1), PW, dt, I32)

    def sample(rois, k, b, gh, gw, iy, ix, H, W):
        bh = extent(rois, k, 2) / tirx.const(PH, dt)
        bw = extent(rois, k, 1) / tirx.const(PW, dt)
        # The bin's mean: 1/area, and 0 for a bin of no area (mmcv's rule).
        inv = T.if_then_else(bh * bw > zero, tirx.const(1.0, dt) / T.max(bh * bw, tirx.const(1e-30, dt)), zero)
        y0, y1, wy0, wy1 = cell_corners(start(rois, k, 2), bh, gh, b // PW * gh + iy, H, dt, I32)
        return (y0, y1, wy0 * inv, wy1 * inv), cell_corners(start(rois, k, 1), bw, gw, b % PW * gw + ix, W, dt, I32)

    return {**sampled_kernels(spec, sched, grids, sample), "backward_boxes": box_gradient_kernel(spec, sched)}


def box_gradient_kernel(spec, sched) -> tirx.PrimFunc:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    _, extent = box_rule(spec)

    def grids(rois, k):
        return cell_grid(extent(rois, k, 2), PH, dt, I32), cell_grid(extent(rois, k, 1), PW, dt, I32)

    return _box_gradient.box_gradient_kernel(spec, sched, grids, box_gradient_macro(spec, I32),
                                             lambda rois, k: has_area(spec, rois, k))
