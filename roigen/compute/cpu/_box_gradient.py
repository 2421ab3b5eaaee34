"""`backward_boxes` on the CPU for ops that average or max bilinear samples (RoIAlign,
rotated RoIAlign): d(loss)/d(boxes), one task per box.

A box's gradient is a reduction over its channels and bins, which one thread owns, so
it is deterministic without atomics.  The kernel reads the map packed in channel
blocks (N, Cb, H, W, L) by the module's `box_pack` kernel: each sample's geometry is
found once per box into scalars, its two slopes summed over L channels at a time in
vector registers, and the lanes added at the end of the box.  In max mode a lane
takes a sample only where it is the lane's channel's argmax; every sample is still
visited, which keeps one vector loop for both modes (a per-channel loop finding each
channel's own sample compiled for 15 s and ran 10x slower).  PrRoIPool's kernel, which
integrates cells rather than sampling, is in prroi_pool.py.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import interpolate
from ..common.rotated import box_gradient_scales
from ..common.signature import dims


def packed_sample_box_gradient_kernel(spec, lanes: int, grids, sample, bin_scales=None) -> tirx.PrimFunc:
    """`backward_boxes(data, rois, out, aux, grad_out, grad_rois)`, `data` the packed map,
    `out` unused, `aux` the forward's argmax in max mode (unused in avg mode).

    `sample(rois, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, y slopes, x slopes, u, v):
    the sample's corners and weights along each axis (common/sampling.py), the slopes of
    those weights (common/sample_gradient.py), and per box coordinate j, how the
    coordinate's sum moves with the sample's x and y gradients: acc[j] += gx*u[j] + gy*v[j].
    `bin_scales(rois, k)` -> (sx, sy), for ops whose rows carry per-bin offsets after the box
    (deform_roi_pool): every sample of a bin moves by sx per unit of the bin's x offset, sy
    per unit of its y offset, so the offsets' gradients are the bin's sums of gx and gy
    times those.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    L = lanes
    BOX = spec.box_columns  # the box's own columns: the coordinates `u` and `v` cover
    ROW = spec.row_columns
    scale_of = box_gradient_scales(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    argmax = bool(spec.aux_outputs)

    @T.macro
    def keep(corner, weight, ys, xs, sy, sx, u, v):
        # The sample's geometry, into scalars the channel loop reads: corners (y0, y1, x0, x1);
        # weights along y and x, their slopes; then u and v per coordinate.
        corner[0] = ys[0]
        corner[1] = ys[1]
        corner[2] = xs[0]
        corner[3] = xs[1]
        weight[0] = ys[2]
        weight[1] = ys[3]
        weight[2] = xs[2]
        weight[3] = xs[3]
        weight[4] = sy[2]
        weight[5] = sy[3]
        weight[6] = sx[2]
        weight[7] = sx[3]
        for j in T.unroll(BOX - 1):
            weight[8 + j] = _pick(u, j)
            weight[8 + BOX - 1 + j] = _pick(v, j)

    def axis(corner, weight, first, base):
        return corner[first], corner[first + 1], weight[base], weight[base + 1]

    N, Cb, H, W, K, C, A = dims("N Cb H W K C A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer((N, Cb, H, W, L), dt), rois: T.Buffer((K, ROW), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, ROW), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((BOX - 1, L), dt)
            sums = T.alloc_buffer((2, L), dt)
            bin_sums = T.alloc_buffer((2, L), dt)  # the bin's sums of gx and gy (per-bin offsets)
            gbin = T.alloc_buffer((Cb, L), dt)  # the bin's output gradient (/ count in avg mode)
            abin = T.alloc_buffer((Cb, L), "int32")  # max mode: the bin's argmax, by channel block
            corner = T.alloc_buffer((4,), "int64")
            weight = T.alloc_buffer((8 + 2 * (BOX - 1),), dt)
            for j, lane in T.grid(BOX - 1, L):
                acc[j, lane] = zero
            n = T.Cast("int64", rois[k, 0])
            gh, gw = T.meta_var(grids(rois, k))
            for ph, pw in T.grid(PH, PW):
                for cb, lane in T.grid(Cb, L):
                    c = T.meta_var(T.min(cb * L + lane, C - 1))
                    at = T.meta_var((k * C + c) * P + ph * PW + pw)
                    if argmax:
                        gbin[cb, lane] = T.if_then_else(cb * L + lane < C, grad_out[k, c, ph * PW + pw], zero)
                        # A = 0 when the forward kept no argmax: no sample is any channel's.
                        abin[cb, lane] = T.if_then_else(at < A, aux[T.min(at, A - 1)], -1)
                    else:
                        gbin[cb, lane] = T.if_then_else(
                            cb * L + lane < C, grad_out[k, c, ph * PW + pw], zero
                        ) * (one / T.Cast(dt, T.max(gh * gw, T.int64(1))))
                if bin_scales is not None:
                    for lane in T.vectorized(L):
                        bin_sums[0, lane] = zero
                        bin_sums[1, lane] = zero
                for iy, ix in T.grid(gh, gw):
                    keep(corner, weight, *sample(rois, k, ph, pw, iy, ix, gh, gw, H, W))
                    for lane in T.vectorized(L):
                        sums[0, lane] = zero
                        sums[1, lane] = zero
                    for cb in range(Cb):
                        for lane in T.vectorized(L):
                            # (sum g * dv/dx, sum g * dv/dy); in max mode only where this sample won.
                            g = T.meta_var(T.if_then_else(abin[cb, lane] == T.Cast("int32", iy * gw + ix),
                                                          gbin[cb, lane], zero) if argmax else gbin[cb, lane])
                            sums[0, lane] = sums[0, lane] + g * interpolate(
                                lambda y, x: data[n, cb, y, x, lane], axis(corner, weight, 0, 0),
                                axis(corner, weight, 2, 6))
                            sums[1, lane] = sums[1, lane] + g * interpolate(
                                lambda y, x: data[n, cb, y, x, lane], axis(corner, weight, 0, 4),
                                axis(corner, weight, 2, 2))
                    for j in range(BOX - 1):
                        for lane in T.vectorized(L):
                            acc[j, lane] = (acc[j, lane] + sums[0, lane] * weight[8 + j]
                                            + sums[1, lane] * weight[8 + BOX - 1 + j])
                    if bin_scales is not None:
                        for lane in T.vectorized(L):
                            bin_sums[0, lane] = bin_sums[0, lane] + sums[0, lane]
                            bin_sums[1, lane] = bin_sums[1, lane] + sums[1, lane]
                if bin_scales is not None:
                    sx, sy = T.meta_var(bin_scales(rois, k))
                    grad_rois[k, BOX + ph * PW + pw] = zero
                    grad_rois[k, BOX + P + ph * PW + pw] = zero
                    for lane in range(L):
                        grad_rois[k, BOX + ph * PW + pw] = grad_rois[k, BOX + ph * PW + pw] + bin_sums[0, lane]
                        grad_rois[k, BOX + P + ph * PW + pw] = grad_rois[k, BOX + P + ph * PW + pw] + bin_sums[1, lane]
                    grad_rois[k, BOX + ph * PW + pw] = grad_rois[k, BOX + ph * PW + pw] * sx
                    grad_rois[k, BOX + P + ph * PW + pw] = grad_rois[k, BOX + P + ph * PW + pw] * sy
            grad_rois[k, 0] = zero
            for j in range(BOX - 1):
                grad_rois[k, j + 1] = zero
                for lane in range(L):
                    grad_rois[k, j + 1] = grad_rois[k, j + 1] + acc[j, lane]
                grad_rois[k, j + 1] = grad_rois[k, j + 1] * scale_of(j)

    return backward_boxes


def _pick(values, j):
    """values[j] for a loop variable j over a short Python list of expressions."""
    chosen = values[-1]
    for i in range(len(values) - 2, -1, -1):
        chosen = tirx.Select(j == i, values[i], chosen)
    return chosen
