"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading unit
cells with their exact integrals (common/integral.py) where RoIAlign reads samples,
and `backward_boxes`, the gradient with respect to the boxes, on the map packed in
channel blocks (one task per box, as _box_gradient.py's, vectorised over channels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.integral import cell_corners, cell_grid, has_area, point_corners
from ..common.sampling import box_rule
from ..common.signature import dims
from . import by_direction
from ._align import align_family_kernels, align_tables
from ._box_gradient import bin_major_gather, box_pack_kernel

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def packed_box_gradient_kernel(spec, lanes: int) -> tirx.PrimFunc:
    """`backward_boxes` on the map packed pixel-major, (N, H, W, Cb, L), by `box_pack`:
    one task per box, common/integral.py's box gradient with each cell's corners found once
    and the channels summed L at a time in vector registers (the generic kernel's
    signature).  As in _box_gradient.py, the box's output gradient is read bin-major
    (`bin_major_gather`) and each pair of edge samples costs eight corner dot products per
    channel, weighted once per sample after the channel loop."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    L = lanes
    start, extent = box_rule(spec)
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    gather = bin_major_gather(dt, L, P, argmax=False)

    @T.macro
    def keep(corner, weight, base, ys, xs):
        # A point pair's corners (y0, y1, x0, x1) and each corner's weight, corners in the
        # order (y0, x0), (y0, x1), (y1, x0), (y1, x1), into scalars read by the channel loop.
        corner[base] = ys[0]
        corner[base + 1] = ys[1]
        corner[base + 2] = xs[0]
        corner[base + 3] = xs[1]
        weight[base] = ys[2] * xs[2]
        weight[base + 1] = ys[2] * xs[3]
        weight[base + 2] = ys[3] * xs[2]
        weight[base + 3] = ys[3] * xs[3]

    @T.macro
    def edges(sums, first, dots, corner, weight, gbin, data, n, p, Cb):
        # sums[first] and sums[first + 1] += g times the surface at the two points kept at
        # bases 0 and 4, summed over channels: per point, four corner dot products.
        for q in T.unroll(8):
            for lane in T.vectorized(L):
                dots[q, lane] = zero
        for cb in range(Cb):
            # (Unrolled loops outside the vector loop: inside it they would scalarize it.)
            for side in T.unroll(2):
                for a in T.unroll(2):
                    for b in T.unroll(2):
                        for lane in T.vectorized(L):
                            dots[side * 4 + a * 2 + b, lane] = dots[side * 4 + a * 2 + b, lane] + gbin[
                                p, cb, lane] * data[n, corner[side * 4 + a], corner[side * 4 + 2 + b], cb, lane]
        for side in T.unroll(2):
            for lane in T.vectorized(L):
                sums[first + side, lane] = sums[first + side, lane] + (
                    weight[side * 4] * dots[side * 4, lane] + weight[side * 4 + 1] * dots[side * 4 + 1, lane]
                    + weight[side * 4 + 2] * dots[side * 4 + 2, lane]
                    + weight[side * 4 + 3] * dots[side * 4 + 3, lane])

    N, Cb, H, W, K, C, A = dims("N Cb H W K C A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer((N, H, W, Cb, L), dt), rois: T.Buffer((K, 5), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, 5), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((4, L), dt)
            sums = T.alloc_buffer((4, L), dt)  # g times L(bx1), L(bx2), L(by1), L(by2), lane by lane
            dots = T.alloc_buffer((8, L), dt)
            gbin = T.alloc_buffer((P, Cb, L), dt)  # the output gradient, bin-major
            gout = T.alloc_buffer((P,), dt)  # per bin: sum over channels of g * out
            tr = T.alloc_buffer((2, L, L), dt)
            corner = T.alloc_buffer((8,), "int64")
            weight = T.alloc_buffer((8,), dt)
            for j, lane in T.grid(4, L):
                acc[j, lane] = zero
            n = T.Cast("int64", rois[k, 0])
            if has_area(spec, rois, k):
                gather(gbin, None, tr, None, grad_out, aux, k, C, Cb, A, one)
                for p in range(P):
                    gout[p] = zero
                for c, p in T.grid(C, P):
                    gout[p] = gout[p] + grad_out[k, c, p] * out[k, c, p]
                gh = T.meta_var(cell_grid(extent(rois, k, 2), PH, dt))
                gw = T.meta_var(cell_grid(extent(rois, k, 1), PW, dt))
                bw = T.meta_var(extent(rois, k, 1) / tirx.const(PW, dt))
                bh = T.meta_var(extent(rois, k, 2) / tirx.const(PH, dt))
                for ph, pw in T.grid(PH, PW):
                    p = T.meta_var(ph * PW + pw)
                    bx1 = T.meta_var(start(rois, k, 1) + T.Cast(dt, pw) * bw)
                    by1 = T.meta_var(start(rois, k, 2) + T.Cast(dt, ph) * bh)
                    for j, lane in T.grid(4, L):
                        sums[j, lane] = zero
                    for iy in range(gh):
                        keep(corner, weight, 0, cell_corners(start(rois, k, 2), bh, gh, ph * gh + iy, H, dt),
                             point_corners(bx1, W, dt))
                        keep(corner, weight, 4, cell_corners(start(rois, k, 2), bh, gh, ph * gh + iy, H, dt),
                             point_corners(bx1 + bw, W, dt))
                        edges(sums, 0, dots, corner, weight, gbin, data, n, p, Cb)
                    for ix in range(gw):
                        keep(corner, weight, 0, point_corners(by1, H, dt),
                             cell_corners(start(rois, k, 1), bw, gw, pw * gw + ix, W, dt))
                        keep(corner, weight, 4, point_corners(by1 + bh, H, dt),
                             cell_corners(start(rois, k, 1), bw, gw, pw * gw + ix, W, dt))
                        edges(sums, 2, dots, corner, weight, gbin, data, n, p, Cb)
                    # common/integral.py's formula, summed over the lanes' channels; the bin's
                    # sum of g * out, already over all channels, enters in lane 0.
                    a0 = T.meta_var(T.Cast(dt, pw) / tirx.const(PW, dt))
                    a1 = T.meta_var(T.Cast(dt, pw + 1) / tirx.const(PW, dt))
                    b0 = T.meta_var(T.Cast(dt, ph) / tirx.const(PH, dt))
                    b1 = T.meta_var(T.Cast(dt, ph + 1) / tirx.const(PH, dt))
                    for lane in T.vectorized(L):
                        s0 = T.meta_var(tirx.Select(lane == 0, gout[p], zero))
                        d_x1 = T.meta_var((bh * s0 - sums[0, lane]) / (bw * bh))
                        d_x2 = T.meta_var((sums[1, lane] - bh * s0) / (bw * bh))
                        d_y1 = T.meta_var((bw * s0 - sums[2, lane]) / (bw * bh))
                        d_y2 = T.meta_var((sums[3, lane] - bw * s0) / (bw * bh))
                        acc[0, lane] = acc[0, lane] + (d_x1 * (one - a0) + d_x2 * (one - a1))
                        acc[1, lane] = acc[1, lane] + (d_y1 * (one - b0) + d_y2 * (one - b1))
                        acc[2, lane] = acc[2, lane] + (d_x1 * a0 + d_x2 * a1)
                        acc[3, lane] = acc[3, lane] + (d_y1 * b0 + d_y2 * b1)
            grad_rois[k, 0] = zero
            for j in range(4):
                grad_rois[k, j + 1] = zero
                for lane in range(L):
                    grad_rois[k, j + 1] = grad_rois[k, j + 1] + acc[j, lane]
                grad_rois[k, j + 1] = grad_rois[k, j + 1] * scale

    return backward_boxes


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, prroi_pool_kernels),
            "box_pack": box_pack_kernel(spec, lanes),
            "backward_boxes": packed_box_gradient_kernel(spec, lanes)}
