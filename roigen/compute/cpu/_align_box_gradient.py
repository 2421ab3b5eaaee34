"""RoIAlign's box gradient on the CPU in the forward's (image, channel block) tasks.

The gradient of a box is a sum over its channels and samples (common/sample_gradient.py):
per sample, g times the sample's slope along x (and y), times how the sample moves with
each box coordinate.  `_box_gradient.py`'s kernel gives each box one task that reads the
box's region of the map in every channel block: about a megabyte per box on fpn_box, which
does not stay in L2, and 1,024 boxes read it from L3 one after another (24 ms, of which
12 ms with every box the same box).  Here each (image, block) task converts its slab of
the map once, as the forward does, and every box of that image samples the slab from L2.

- Corners and weights come from the forward's per-box tables (`tables`); `box_slopes`
  adds, per table entry, the sample's slope flag and its shares of the box's two
  coordinates along that axis (1 - a, a), scaled by 1/count for y in avg mode (the y
  weights already carry it for x).  So a task finds no geometry itself.
- A task sums, per lane, four running values for each of its boxes: (sum of g * slope
  along x * (1 - a)), (... * a), and the same along y; they go to `partial[k, cb]`.
- The second pass sums each box's partials over blocks and lanes in a fixed order: the
  result is deterministic without atomics.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at
from ..common.indexing import unravel
from ..common.sampling import box_grids, box_rule, sample_fraction, sample_pos
from ..common.signature import dims
from ._box_gradient import bin_major_block
from ._layout import block_macros, map_shape

# partial[k, cb, j, lane]: d/dx1', d/dx2', d/dy1', d/dy2' of box k from block cb, per lane.
SUMS = 4


def align_box_gradient_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    """`box_slopes(rois, stab, H, W)` and `backward_boxes(data, rois, itab, ftab, stab, aux,
    grad_out, partial, grad_rois)`: `data` the caller's map, `itab`/`ftab` the forward's
    tables (`_align.align_tables`), `stab` a float table of their shape, `partial` (K, Cb,
    4, L) scratch, `aux` the forward's argmax in max mode (size 0 in avg mode)."""
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    P = PH * PW
    avg = spec.mode == "avg"
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    scale = tirx.const(spec.spatial_scale, dt)
    start, extent = box_rule(spec)
    grids = box_grids(spec)
    load, _ = block_macros(spec.layout, dt, L)
    gather = bin_major_block(dt, L, P, not avg)

    @T.macro
    def axis_slopes(rois, stab, k, col, pooled, grid, base, limit, weight):
        # Entry s of one axis: (slope * (1 - a), slope * a) * weight, where slope is 1 while
        # the sample moves the bilinear weights (common/sample_gradient.axis_slope).
        for s in range(pooled * grid):
            pos = T.meta_var(sample_pos(start(rois, k, col), extent(rois, k, col) / tirx.const(pooled, dt), grid,
                                        s, dt))
            a = T.meta_var(sample_fraction(s // grid, s % grid, grid, pooled, dt))
            moving = T.meta_var(tirx.all(pos > zero, pos < T.Cast(dt, limit - 1)))
            stab[k, base + 2 * s] = T.if_then_else(moving, (one - a) * weight, zero)
            stab[k, base + 2 * s + 1] = T.if_then_else(moving, a * weight, zero)

    K, S = dims("K S", "int64")
    @T.prim_func
    def box_slopes(rois: T.Buffer((K, 5), dt), stab: T.Buffer((K, S), dt), H: T.int64, W: T.int64):
        # Laid out as the forward's tables: y entries first (bin row * gh + sample), then x.
        for k in T.parallel(K):
            gh, gw = T.meta_var(grids(rois, k))
            inv = T.meta_var(one / T.Cast(dt, T.max(gh * gw, T.int64(1))) if avg else one)
            axis_slopes(rois, stab, k, 2, PH, gh, 0, H, inv)
            axis_slopes(rois, stab, k, 1, PW, gw, 2 * PH * gh, W, one)

    @T.macro
    def box_sums(slab, rois, itab, ftab, stab, gbin, abin, k, sums, W):
        gh, gw = T.meta_var(grids(rois, k))
        for j, lane in T.grid(SUMS, L):
            sums[j, lane] = zero
        for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
            r = T.meta_var(2 * (ph * gh + iy))
            c = T.meta_var(2 * PH * gh + 2 * (pw * gw + ix))
            y0, y1, wy0, wy1 = T.meta_var(corners_at(itab, ftab, k, r))
            x0, x1, wx0, wx1 = T.meta_var(corners_at(itab, ftab, k, c))
            p = T.meta_var(ph * PW + pw)
            for lane in T.vectorized(L):
                # slab[0, 0, 0, row*W + col] addresses pixel (row, col).
                v00 = T.meta_var(slab[0, 0, 0, T.Cast("int64", y0 + x0), lane])
                v01 = T.meta_var(slab[0, 0, 0, T.Cast("int64", y0 + x1), lane])
                v10 = T.meta_var(slab[0, 0, 0, T.Cast("int64", y1 + x0), lane])
                v11 = T.meta_var(slab[0, 0, 0, T.Cast("int64", y1 + x1), lane])
                # Max mode: only where the sample won the lane's channel (a Select keeps the
                # loop vector).
                g = T.meta_var(gbin[p, 0, lane] if avg else tirx.Select(
                    abin[p, 0, lane] == T.Cast("int32", iy * gw + ix), gbin[p, 0, lane], zero))
                gx = T.meta_var(g * (wy0 * (v01 - v00) + wy1 * (v11 - v10)))
                gy = T.meta_var(g * (wx0 * (v10 - v00) + wx1 * (v11 - v01)))
                sums[0, lane] = sums[0, lane] + gx * stab[k, c]
                sums[1, lane] = sums[1, lane] + gx * stab[k, c + 1]
                sums[2, lane] = sums[2, lane] + gy * stab[k, r]
                sums[3, lane] = sums[3, lane] + gy * stab[k, r + 1]

    # The non-aligned box is at least one pixel: where that clamp holds, the sample moves
    # with the first coordinate only (d/dx1' = 1, d/dx2' = 0).
    def clamped(rois, k, col):
        return (start(rois, k, col + 2) - start(rois, k, col) < one) if not spec.aligned else tirx.const(False)

    N, C, H, W, K, S, A, Cb = dims("N C H W K S A Cb", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt), rois: T.Buffer((K, 5), dt),
                       itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt), stab: T.Buffer((K, S), dt),
                       aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       partial: T.Buffer((K, Cb, SUMS, L), dt), grad_rois: T.Buffer((K, 5), dt)):
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            slab = T.alloc_buffer((1, 1, H, W, L), dt)
            gbin = T.alloc_buffer((P, 1, L), dt)
            abin = T.alloc_buffer((P, 1, L), "int32")
            tr = T.alloc_buffer((2, L, L), dt)
            atr = T.alloc_buffer((2, L, L), "int32")
            sums = T.alloc_buffer((SUMS, L), dt)
            load(data, slab, n, cb, 0, 0, C, H, W)
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    gather(gbin, abin, tr, atr, grad_out, aux, k, cb, 0, C, A, one)
                    box_sums(slab, rois, itab, ftab, stab, gbin, abin, k, sums, W)
                    for j in range(SUMS):
                        for lane in T.vectorized(L):
                            partial[k, cb, j, lane] = sums[j, lane]
        for k in T.parallel(K):
            total = T.alloc_buffer((SUMS,), dt)
            for j in range(SUMS):
                total[j] = zero
                # Every block of box k was written by its image's tasks; a batch index naming
                # no image (refused before any kernel runs) leaves its partial sums unwritten.
                if T.Cast("int64", rois[k, 0]) >= 0 and T.Cast("int64", rois[k, 0]) < N:
                    for b, lane in T.grid(Cb, L):
                        total[j] = total[j] + partial[k, b, j, lane]
            grad_rois[k, 0] = zero
            grad_rois[k, 1] = T.if_then_else(clamped(rois, k, 1), total[0] + total[1], total[0]) * scale
            grad_rois[k, 3] = T.if_then_else(clamped(rois, k, 1), zero, total[1]) * scale
            grad_rois[k, 2] = T.if_then_else(clamped(rois, k, 2), total[2] + total[3], total[2]) * scale
            grad_rois[k, 4] = T.if_then_else(clamped(rois, k, 2), zero, total[3]) * scale

    return {"box_slopes": box_slopes, "backward_boxes": backward_boxes}
