"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading unit
cells with their exact integrals (common/integral.py) where RoIAlign reads samples,
and `backward_boxes`, the gradient with respect to the boxes.

`backward_boxes` runs one task per box: the box's gradient is a reduction over
its channels and bins, which one thread owns, so it is deterministic without
atomics.  It reads the caller's map (NCHW, or NHWC for channels_last) and the
forward's output.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.integral import box_gradient_macro, cell_grid, has_area
from ..common.sampling import box_rule
from ..common.signature import dims
from . import by_direction
from ._align import align_family_kernels, align_tables
from ._layout import map_shape

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def box_gradient_kernel(spec) -> tirx.PrimFunc:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    _, extent = box_rule(spec)
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    accumulate = box_gradient_macro(spec)
    nchw = spec.layout == "NCHW"

    N, C, H, W, K = dims("N C H W K", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt), rois: T.Buffer((K, 5), dt),
                       out: T.Buffer((K, C, P), dt), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, 5), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((4,), dt)
            line = T.alloc_buffer((4,), dt)
            for j in range(4):
                acc[j] = zero
            n = T.Cast("int64", rois[k, 0])
            if has_area(spec, rois, k):
                gh = T.meta_var(cell_grid(extent(rois, k, 2), PH, dt))
                gw = T.meta_var(cell_grid(extent(rois, k, 1), PW, dt))
                for c, ph, pw in T.grid(C, PH, PW):
                    accumulate(lambda y, x: data[n, c, y, x] if nchw else data[n, y, x, c], rois, k, ph, pw,
                               gh, gw, H, W, out[k, c, ph * PW + pw], grad_out[k, c, ph * PW + pw], line, acc)
            grad_rois[k, 0] = zero
            for j in range(4):
                grad_rois[k, j + 1] = acc[j] * scale

    return backward_boxes


def kernels(spec, schedule) -> dict:
    return {**by_direction(spec, schedule, prroi_pool_kernels), "backward_boxes": box_gradient_kernel(spec)}
