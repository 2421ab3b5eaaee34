"""`backward_boxes` on the CPU for rotated RoIAlign and deformable RoI pooling (and the
shared pieces of PrRoIPool's, prroi_pool.py): d(loss)/d(boxes), one task per box.

A box's gradient is a reduction over its channels and bins, which one thread owns, so
it is deterministic without atomics.  The kernel reads the map packed pixel-major,
(N, H, W, Cb, L), by the module's `box_pack` kernel (`box_pack_kernel`): each corner a
sample reads is one contiguous run of all its channels.  (Packed block-major, as the
forward's slabs, each corner was Cb lines a slab apart: rotated RoIAlign's box gradient
on fpn_box took 1.84x its forward+backward against 2.26x, PrRoIPool's 1.66x against 2.19x.)
Per box, its output gradient (and argmax, in max mode) is first turned bin-major through
L x L block transposes (`bin_major_gather`), so the channel loop reads whole vectors
rather than one strided value per lane.  Per sample, the geometry is found once into
scalars; the channel loop then takes four dot products, sum over channels of g * corner
value, one per corner, and the two slopes (d/dx, d/dy) are those four weighted by the
corners' coefficients: four FMAs per channel instead of eight.  The lanes are added at
the end of the box.  In max mode a lane takes a sample only where it is the lane's
channel's argmax; every sample is still visited, which keeps one vector loop for both
modes (a per-channel loop finding each channel's own sample compiled for 15 s and ran
10x slower).  What is left is mostly memory: each box reads its region of the map in
every channel, about a megabyte on fpn_box, from L3 (with all boxes the same box,
RoIAlign's took half the time).  RoIAlign, whose samples the forward's tables already
hold, runs its box gradient in the forward's (image, block) tasks instead
(_align_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.rotated import box_gradient_scales
from ..common.signature import dims
from ._layout import layout_kernels
from ._transpose import block_transpose, result_slot


def box_pack_kernel(spec, lanes: int) -> tirx.PrimFunc:
    """The `box_pack` kernel the per-box kernels read: the caller's map, pixel-major blocks."""
    return layout_kernels(spec.layout, spec.compute_dtype, lanes)["pack_pixels"]


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
    gather = bin_major_gather(dt, L, P, argmax)

    @T.macro
    def keep(corner, weight, ys, xs, sy, sx, u, v):
        # The sample's geometry, into scalars the channel loop reads: corners (y0, y1, x0, x1);
        # each corner's coefficient in d/dx (y weight x x slope) and in d/dy (y slope x
        # x weight), corners in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1); then u, v.
        corner[0] = ys[0]
        corner[1] = ys[1]
        corner[2] = xs[0]
        corner[3] = xs[1]
        weight[0] = ys[2] * sx[2]
        weight[1] = ys[2] * sx[3]
        weight[2] = ys[3] * sx[2]
        weight[3] = ys[3] * sx[3]
        weight[4] = sy[2] * xs[2]
        weight[5] = sy[2] * xs[3]
        weight[6] = sy[3] * xs[2]
        weight[7] = sy[3] * xs[3]
        for j in T.unroll(BOX - 1):
            weight[8 + j] = _pick(u, j)
            weight[8 + BOX - 1 + j] = _pick(v, j)

    N, Cb, H, W, K, C, A = dims("N Cb H W K C A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer((N, H, W, Cb, L), dt), rois: T.Buffer((K, ROW), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, ROW), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((BOX - 1, L), dt)
            dots = T.alloc_buffer((4, L), dt)  # per corner: sum over channels of g * the corner's value
            sums = T.alloc_buffer((2, L), dt)
            bin_sums = T.alloc_buffer((2, L), dt)  # the bin's sums of gx and gy (per-bin offsets)
            gbin = T.alloc_buffer((P, Cb, L), dt)  # the output gradient, bin-major (/ count in avg mode)
            abin = T.alloc_buffer((P, Cb, L), "int32")  # max mode: the argmax, bin-major
            tr = T.alloc_buffer((2, L, L), dt)
            atr = T.alloc_buffer((2, L, L), "int32")
            corner = T.alloc_buffer((4,), "int64")
            weight = T.alloc_buffer((8 + 2 * (BOX - 1),), dt)
            for j, lane in T.grid(BOX - 1, L):
                acc[j, lane] = zero
            n = T.Cast("int64", rois[k, 0])
            gh, gw = T.meta_var(grids(rois, k))
            # Max mode: a channel's gradient goes whole to its winning sample; avg: shared by all.
            gather(gbin, abin, tr, atr, grad_out, aux, k, C, Cb, A,
                   one if argmax else one / T.Cast(dt, T.max(gh * gw, T.int64(1))))
            for ph, pw in T.grid(PH, PW):
                p = T.meta_var(ph * PW + pw)
                if bin_scales is not None:
                    for lane in T.vectorized(L):
                        bin_sums[0, lane] = zero
                        bin_sums[1, lane] = zero
                for iy, ix in T.grid(gh, gw):
                    keep(corner, weight, *sample(rois, k, ph, pw, iy, ix, gh, gw, H, W))
                    for q in T.unroll(4):
                        for lane in T.vectorized(L):
                            dots[q, lane] = zero
                    for cb in range(Cb):
                        for lane in T.vectorized(L):
                            # In max mode a lane takes the sample only where it won.  (A Select:
                            # if_then_else here turned the loop scalar.)
                            g = T.meta_var(tirx.Select(abin[p, cb, lane] == T.Cast("int32", iy * gw + ix),
                                                       gbin[p, cb, lane], zero) if argmax else gbin[p, cb, lane])
                            dots[0, lane] = dots[0, lane] + g * data[n, corner[0], corner[2], cb, lane]
                            dots[1, lane] = dots[1, lane] + g * data[n, corner[0], corner[3], cb, lane]
                            dots[2, lane] = dots[2, lane] + g * data[n, corner[1], corner[2], cb, lane]
                            dots[3, lane] = dots[3, lane] + g * data[n, corner[1], corner[3], cb, lane]
                    for lane in T.vectorized(L):
                        # (sum g * dv/dx, sum g * dv/dy) over this sample's channels.
                        sums[0, lane] = (weight[0] * dots[0, lane] + weight[1] * dots[1, lane]
                                         + weight[2] * dots[2, lane] + weight[3] * dots[3, lane])
                        sums[1, lane] = (weight[4] * dots[0, lane] + weight[5] * dots[1, lane]
                                         + weight[6] * dots[2, lane] + weight[7] * dots[3, lane])
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
                    grad_rois[k, BOX + p] = zero
                    grad_rois[k, BOX + P + p] = zero
                    for lane in range(L):
                        grad_rois[k, BOX + p] = grad_rois[k, BOX + p] + bin_sums[0, lane]
                        grad_rois[k, BOX + P + p] = grad_rois[k, BOX + P + p] + bin_sums[1, lane]
                    grad_rois[k, BOX + p] = grad_rois[k, BOX + p] * sx
                    grad_rois[k, BOX + P + p] = grad_rois[k, BOX + P + p] * sy
            grad_rois[k, 0] = zero
            for j in range(BOX - 1):
                grad_rois[k, j + 1] = zero
                for lane in range(L):
                    grad_rois[k, j + 1] = grad_rois[k, j + 1] + acc[j, lane]
                grad_rois[k, j + 1] = grad_rois[k, j + 1] * scale_of(j)

    return backward_boxes


def bin_major_gather(dt: str, lanes: int, bins: int, argmax: bool):
    """A macro `gather(gbin, abin, tr, atr, grad_out, aux, k, C, Cb, A, scale)` filling
    gbin[p, cb, lane] = grad_out[k, cb*L + lane, p] * scale and, with `argmax`,
    abin[p, cb, lane] = aux[(k*C + cb*L + lane)*P + p]: box k's output gradient and argmax
    turned bin-major, so that each sample's channel loop reads whole vectors (one block
    at a time: `bin_major_block`)."""
    gather_block = bin_major_block(dt, lanes, bins, argmax)

    @T.macro
    def gather(gbin, abin, tr, atr, grad_out, aux, k, C, Cb, A, scale):
        for cb in range(Cb):
            gather_block(gbin, abin, tr, atr, grad_out, aux, k, cb, cb, C, A, scale)

    return gather


def bin_major_block(dt: str, lanes: int, bins: int, argmax: bool):
    """A macro `gather(gbin, abin, tr, atr, grad_out, aux, k, cb, slot, C, A, scale)` filling
    gbin[p, slot, lane] = grad_out[k, cb*L + lane, p] * scale and, with `argmax`,
    abin[p, slot, lane] = aux[(k*C + cb*L + lane)*P + p]: channel block cb of box k's
    output gradient (and argmax), bin-major.

    Full channel blocks turn L bins at a time through block transposes in `tr`/`atr`
    ((2, L, L) scratch, of dt and int32); the remainder bins and a partial block go
    element by element.  Channels past C get 0 (and argmax -1, which no sample is);
    so does every channel where `aux` (A values) is too short for box k.
    """
    L, P = lanes, bins
    slot_of = result_slot(L)
    transpose = block_transpose(L)
    zero = tirx.const(0.0, dt)
    whole = T.Ramp(0, 1, L)

    @T.macro
    def gather(gbin, abin, tr, atr, grad_out, aux, k, cb, slot, C, A, scale):
        kept = T.meta_var(A >= (k + 1) * C * P)
        if (cb + 1) * L <= C:
            for chunk in range(P // L):
                for i in T.unroll(L):
                    tr[1, i, whole] = grad_out[k, cb * L + i, T.Ramp(chunk * L, 1, L)]
                transpose(tr)
                for j in T.unroll(L):
                    gbin[chunk * L + j, slot, whole] = tr[slot_of, j, whole] * T.Broadcast(scale, L)
                if argmax:
                    if kept:
                        for i in T.unroll(L):
                            atr[1, i, whole] = aux[T.Ramp((k * C + cb * L + i) * P + chunk * L, 1, L)]
                        transpose(atr)
                        for j in T.unroll(L):
                            abin[chunk * L + j, slot, whole] = atr[slot_of, j, whole]
                    else:
                        for j, lane in T.grid(L, L):
                            abin[chunk * L + j, slot, lane] = -1
            for r, lane in T.grid(P % L, L):
                gbin[P - P % L + r, slot, lane] = grad_out[k, cb * L + lane, P - P % L + r] * scale
                if argmax:
                    abin[P - P % L + r, slot, lane] = T.if_then_else(
                        kept, aux[T.min((k * C + cb * L + lane) * P + P - P % L + r, A - 1)], -1)
        else:
            for p, lane in T.grid(P, L):
                c = T.meta_var(T.min(cb * L + lane, C - 1))
                gbin[p, slot, lane] = T.if_then_else(cb * L + lane < C, grad_out[k, c, p], zero) * scale
                if argmax:
                    abin[p, slot, lane] = T.if_then_else(
                        cb * L + lane < C and kept, aux[T.min((k * C + c) * P + p, A - 1)], -1)

    return gather


def _pick(values, j):
    """values[j] for a loop variable j over a short Python list of expressions."""
    chosen = values[-1]
    for i in range(len(values) - 2, -1, -1):
        chosen = tirx.Select(j == i, values[i], chosen)
    return chosen
