"""Precise RoI Pooling on GPUs: `_sampled.py`'s kernels, each thread reading the unit cells
of its bin with their exact integrals (common/integral.py), and `backward_boxes`.

`backward_boxes` gives each box's reduction to one block: its threads take
(channel, bin) pairs in turn, each keeping its own partial sums, and the
block's first thread adds the partials in thread order.  No atomics (WGSL has
no float atomics), and the same bits on every run.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.integral import box_gradient_macro, cell_corners, cell_grid, has_area
from ..common.sampling import box_rule
from ..common.signature import dims
from ._sampled import I32, sampled_kernels
from ._threads import launch


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
    P = PH * PW
    TPB = sched.threads
    _, extent = box_rule(spec)
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    accumulate = box_gradient_macro(spec, I32)

    N, H, W, C, K = dims("N H W C K", I32)
    @T.prim_func
    def backward_boxes(x: T.Buffer((N, H, W, C), dt), rois: T.Buffer((K, 5), dt), out: T.Buffer((K, C, P), dt),
                       grad_out: T.Buffer((K, C, P), dt), grad_rois: T.Buffer((K, 5), dt)):
        k, t = launch(K, TPB)
        partial = T.alloc_buffer((TPB * 4,), dt, scope="shared")
        acc = T.alloc_buffer((4,), dt, scope="local")
        line = T.alloc_buffer((4,), dt, scope="local")
        for j in range(4):
            acc[j] = zero
        n = T.Cast(I32, rois[k, 0])
        if has_area(spec, rois, k):
            gh = T.meta_var(cell_grid(extent(rois, k, 2), PH, dt, I32))
            gw = T.meta_var(cell_grid(extent(rois, k, 1), PW, dt, I32))
            for i in range((C * P + TPB - 1) // TPB):
                if i * TPB + t < C * P:
                    c, b = T.meta_var(unravel(i * TPB + t, (C, P)))
                    accumulate(lambda y, xx: x[n, y, xx, c], rois, k, b // PW, b % PW, gh, gw, H, W,
                               out[k, c, b], grad_out[k, c, b], line, acc)
        for j in range(4):
            partial[t * 4 + j] = acc[j]
        T.tvm_storage_sync("shared")
        if t == 0:
            for j in range(4):
                acc[j] = zero
            for s in range(TPB):
                for j in range(4):
                    acc[j] = acc[j] + partial[s * 4 + j]
            grad_rois[k, 0] = zero
            for j in range(4):
                grad_rois[k, j + 1] = acc[j] * scale

    return backward_boxes
