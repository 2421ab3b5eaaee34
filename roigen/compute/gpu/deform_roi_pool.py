"""Deformable RoI pooling on GPUs: `_sampled.py`'s kernels, each thread placing its samples in
its bin shifted by the box's offsets (common/deform.py), and `backward_boxes`.

`backward_boxes` runs one block per box, as _box_gradient.py's, but walks the bins in
order: a bin's offsets get its own reduction over the channels (the block's threads take
channels in turn, each summing its slopes over the bin's samples; the first thread adds
the threads' sums in thread order), and the box's corners get the threads' sums at the
end.  No atomics, the same bits on every run.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import held_with_slopes, hold_with_slopes_macro, interpolate
from ..common.deform import DeformBoxes, deform_sample_gradient
from ..common.sampling import axis_corners
from ..common.signature import dims
from ._box_gradient import block_total_macro
from ._sampled import I32, grid_macro, sampled_kernels
from ._threads import launch


def kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    PW = spec.pooled_width
    box = DeformBoxes(spec)

    def grids(rois, k):
        return box.grid(rois, k, 2, I32), box.grid(rois, k, 1, I32)

    def sample(rois, k, b, gh, gw, iy, ix, H, W):
        y = box.position(rois, k, 2, b // PW, b % PW, iy, gh)
        x = box.position(rois, k, 1, b // PW, b % PW, ix, gw)
        inv = tirx.const(1.0, dt) / T.Cast(dt, T.max(gh * gw, tirx.const(1, I32)))
        y0, y1, wy0, wy1 = axis_corners(y, H, dt, I32)
        return (y0, y1, wy0 * inv, wy1 * inv), axis_corners(x, W, dt, I32)

    return {**sampled_kernels(spec, sched, grids, sample), "backward_boxes": box_gradient_kernel(spec, sched, grids)}


def box_gradient_kernel(spec, sched, grids) -> tirx.PrimFunc:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    TPB = sched.threads
    BOX, ROW = spec.box_columns, spec.row_columns
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    sample, bin_scales = deform_sample_gradient(spec, I32)
    hold = hold_with_slopes_macro()
    fill_grid = grid_macro(grids)
    block_total = block_total_macro(dt, TPB, BOX - 1)

    N, H, W, C, K, A = dims("N H W C K A", I32)
    @T.prim_func
    def backward_boxes(x: T.Buffer((N, H, W, C), dt), rois: T.Buffer((K, ROW), dt), out: T.Buffer((K, C, P), dt),
                       aux: T.Buffer((A,), I32), grad_out: T.Buffer((K, C, P), dt), grad_rois: T.Buffer((K, ROW), dt)):
        k, t = launch(K, TPB)
        partial = T.alloc_buffer((TPB * (BOX - 1),), dt, scope="shared")
        acc = T.alloc_buffer((BOX - 1,), dt, scope="local")  # d/d (x1', y1', x2', y2'), this thread's
        sums = T.alloc_buffer((2,), dt, scope="local")  # this thread's sums of gx, gy over a bin
        for j in range(BOX - 1):
            acc[j] = zero
        # The grid, and each sample's corners, weights and slopes, in registers (bilinear.hold_macro).
        grid = T.alloc_buffer((2,), I32, scope="local")
        at = T.alloc_buffer((8,), I32, scope="local")
        weight = T.alloc_buffer((8,), dt, scope="local")
        n = T.Cast(I32, rois[k, 0])
        fill_grid(grid, rois, k)
        gh, gw = T.meta_var((grid[0], grid[1]))
        inv = T.meta_var(one / T.Cast(dt, T.max(gh * gw, 1)))
        for b in range(P):
            sums[0] = zero
            sums[1] = zero
            for iy, ix in T.grid(gh, gw):
                ys_, xs_, sy_, sx_, u, v = T.meta_var(sample(rois, k, b // PW, b % PW, iy, ix, gh, gw, H, W))
                hold(at, weight, ys_, xs_, sy_, sx_)
                ys, xs, sy, sx = T.meta_var(held_with_slopes(at, weight))
                for i in range((C + TPB - 1) // TPB):
                    if i * TPB + t < C:
                        c = T.meta_var(i * TPB + t)
                        g = T.meta_var(grad_out[k, c, b] * inv)
                        gx = T.meta_var(g * interpolate(lambda yv, xv: x[n, yv, xv, c], ys, sx))
                        gy = T.meta_var(g * interpolate(lambda yv, xv: x[n, yv, xv, c], sy, xs))
                        sums[0] = sums[0] + gx
                        sums[1] = sums[1] + gy
                        acc[0] = acc[0] + gx * u[0]
                        acc[1] = acc[1] + gy * v[1]
                        acc[2] = acc[2] + gx * u[2]
                        acc[3] = acc[3] + gy * v[3]
            partial[2 * t] = sums[0]
            partial[2 * t + 1] = sums[1]
            T.tvm_storage_sync("shared")
            if t == 0:
                sums[0] = zero
                sums[1] = zero
                for s in range(TPB):
                    sums[0] = sums[0] + partial[2 * s]
                    sums[1] = sums[1] + partial[2 * s + 1]
                ox, oy = T.meta_var(bin_scales(rois, k))
                grad_rois[k, BOX + b] = sums[0] * ox
                grad_rois[k, BOX + P + b] = sums[1] * oy
            T.tvm_storage_sync("shared")
        block_total(partial, acc, t, grad_rois, k, lambda j: scale)

    return backward_boxes
