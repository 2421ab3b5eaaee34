"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading unit
cells with their exact integrals (common/integral.py) where RoIAlign reads samples,
and `backward_boxes`, the gradient with respect to the boxes, on the map packed in
channel blocks (one task per box, as _box_gradient.py's, vectorised over channels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import interpolate
from ..common.integral import cell_corners, cell_grid, has_area, point_corners
from ..common.sampling import box_rule
from ..common.signature import dims
from . import by_direction
from ._align import align_family_kernels, align_tables
from ._layout import layout_kernels

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def packed_box_gradient_kernel(spec, lanes: int) -> tirx.PrimFunc:
    """`backward_boxes` on the map packed in channel blocks (N, Cb, H, W, L) by `box_pack`:
    one task per box, common/integral.py's box gradient with each cell's corners found once
    and the channels summed L at a time in vector registers (the generic kernel's
    signature)."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    L = lanes
    start, extent = box_rule(spec)
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)

    @T.macro
    def keep(corner, weight, base, ys, xs):
        # A cell (or point) pair's corners and weights, into scalars read by the channel loop.
        corner[base] = ys[0]
        corner[base + 1] = ys[1]
        corner[base + 2] = xs[0]
        corner[base + 3] = xs[1]
        weight[base] = ys[2]
        weight[base + 1] = ys[3]
        weight[base + 2] = xs[2]
        weight[base + 3] = xs[3]

    def kept(corner, weight, base, axis):
        return (corner[base + 2 * axis], corner[base + 2 * axis + 1], weight[base + 2 * axis],
                weight[base + 2 * axis + 1])

    N, Cb, H, W, K, C, A = dims("N Cb H W K C A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer((N, Cb, H, W, L), dt), rois: T.Buffer((K, 5), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, 5), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((4, L), dt)
            sums = T.alloc_buffer((5, L), dt)  # sum g*out, then g times L(bx1), L(bx2), L(by1), L(by2)
            gbin = T.alloc_buffer((Cb, L), dt)
            corner = T.alloc_buffer((8,), "int64")
            weight = T.alloc_buffer((8,), dt)
            for j, lane in T.grid(4, L):
                acc[j, lane] = zero
            n = T.Cast("int64", rois[k, 0])
            if has_area(spec, rois, k):
                gh = T.meta_var(cell_grid(extent(rois, k, 2), PH, dt))
                gw = T.meta_var(cell_grid(extent(rois, k, 1), PW, dt))
                bw = T.meta_var(extent(rois, k, 1) / tirx.const(PW, dt))
                bh = T.meta_var(extent(rois, k, 2) / tirx.const(PH, dt))
                for ph, pw in T.grid(PH, PW):
                    bx1 = T.meta_var(start(rois, k, 1) + T.Cast(dt, pw) * bw)
                    by1 = T.meta_var(start(rois, k, 2) + T.Cast(dt, ph) * bh)
                    for j, lane in T.grid(5, L):
                        sums[j, lane] = zero
                    for cb, lane in T.grid(Cb, L):
                        c = T.meta_var(T.min(cb * L + lane, C - 1))
                        gbin[cb, lane] = T.if_then_else(cb * L + lane < C, grad_out[k, c, ph * PW + pw], zero)
                        sums[0, lane] = sums[0, lane] + gbin[cb, lane] * out[k, c, ph * PW + pw]
                    for iy in range(gh):
                        keep(corner, weight, 0, cell_corners(start(rois, k, 2), bh, gh, ph * gh + iy, H, dt),
                             point_corners(bx1, W, dt))
                        keep(corner, weight, 4, cell_corners(start(rois, k, 2), bh, gh, ph * gh + iy, H, dt),
                             point_corners(bx1 + bw, W, dt))
                        for cb in range(Cb):
                            for lane in T.vectorized(L):
                                sums[1, lane] = sums[1, lane] + gbin[cb, lane] * interpolate(
                                    lambda y, x: data[n, cb, y, x, lane], kept(corner, weight, 0, 0),
                                    kept(corner, weight, 0, 1))
                                sums[2, lane] = sums[2, lane] + gbin[cb, lane] * interpolate(
                                    lambda y, x: data[n, cb, y, x, lane], kept(corner, weight, 4, 0),
                                    kept(corner, weight, 4, 1))
                    for ix in range(gw):
                        keep(corner, weight, 0, point_corners(by1, H, dt),
                             cell_corners(start(rois, k, 1), bw, gw, pw * gw + ix, W, dt))
                        keep(corner, weight, 4, point_corners(by1 + bh, H, dt),
                             cell_corners(start(rois, k, 1), bw, gw, pw * gw + ix, W, dt))
                        for cb in range(Cb):
                            for lane in T.vectorized(L):
                                sums[3, lane] = sums[3, lane] + gbin[cb, lane] * interpolate(
                                    lambda y, x: data[n, cb, y, x, lane], kept(corner, weight, 0, 0),
                                    kept(corner, weight, 0, 1))
                                sums[4, lane] = sums[4, lane] + gbin[cb, lane] * interpolate(
                                    lambda y, x: data[n, cb, y, x, lane], kept(corner, weight, 4, 0),
                                    kept(corner, weight, 4, 1))
                    # common/integral.py's formula, summed over the lanes' channels.
                    a0 = T.meta_var(T.Cast(dt, pw) / tirx.const(PW, dt))
                    a1 = T.meta_var(T.Cast(dt, pw + 1) / tirx.const(PW, dt))
                    b0 = T.meta_var(T.Cast(dt, ph) / tirx.const(PH, dt))
                    b1 = T.meta_var(T.Cast(dt, ph + 1) / tirx.const(PH, dt))
                    for lane in T.vectorized(L):
                        d_x1 = T.meta_var((bh * sums[0, lane] - sums[1, lane]) / (bw * bh))
                        d_x2 = T.meta_var((sums[2, lane] - bh * sums[0, lane]) / (bw * bh))
                        d_y1 = T.meta_var((bw * sums[0, lane] - sums[3, lane]) / (bw * bh))
                        d_y2 = T.meta_var((sums[4, lane] - bw * sums[0, lane]) / (bw * bh))
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
            "box_pack": layout_kernels(spec.layout, spec.compute_dtype, lanes)["pack"],
            "backward_boxes": packed_box_gradient_kernel(spec, lanes)}
