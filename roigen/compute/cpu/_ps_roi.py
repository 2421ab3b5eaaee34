"""R-FCN's position-sensitive pooling as TIR: ps_roi_align and ps_roi_pool.

Output bin (ph, pw) of channel c reads input channel (c*PH + ph)*PW + pw, so
one output channel's bins read PH*PW different planes and channel blocks
would not vectorise; these kernels read contiguous NCHW directly (no packing,
whose cost would exceed the whole op), one scalar per sample.

Every input plane feeds exactly one output bin of one channel, so both
directions run one task per (image, input plane): the plane (H*W values)
stays in cache while every box of that image samples it, the map is read
once, and in backward the task owns its plane of the gradient (no atomics,
deterministic).  (Forward speed measured the same box by box; the scalar
corner loads dominate either way.)

These ops keep no argmax; their kernels still take the (empty) aux buffer of
the family's calling convention (backends/llvm.py: Kernels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, interpolate, scatter_macro
from ..common.sampling import box_rule, pool_edge
from ._align import align_tables


def ps_roi_align_kernels(spec) -> dict[str, tirx.PrimFunc]:
    """torchvision's ps_roi_align: aligned (half-pixel) boxes with no minimum size."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    zero = tirx.const(0.0, dt)
    grids, table_kernels = align_tables(spec, *box_rule(spec))
    scatter = scatter_macro()

    @T.prim_func
    def forward(d: T.handle, r: T.handle, it: T.handle, ft: T.handle, o: T.handle, a: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        S = T.int64()
        A = T.int64()
        data = T.match_buffer(d, (N, C, H, W), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        itab = T.match_buffer(it, (K, S), "int32")
        ftab = T.match_buffer(ft, (K, S), dt)
        out = T.match_buffer(o, (K, C // P, P), dt)
        T.match_buffer(a, (A,), "int32")  # the empty aux
        for task in T.parallel(N * C):
            n = task // C
            plane = task % C
            ph = (plane % P) // PW
            pw = plane % PW
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    gh = T.meta_var(grids(rois, k)[0])
                    gw = T.meta_var(grids(rois, k)[1])
                    acc = T.alloc_buffer((1,), dt)
                    acc[0] = zero
                    for iy, ix in T.grid(gh, gw):
                        sy = 2 * (ph * gh + iy)
                        sx = 2 * PH * gh + 2 * (pw * gw + ix)
                        # data[n, plane, 0, row*W + col] addresses pixel (row, col).
                        acc[0] = interpolate(lambda y, x: data[n, plane, 0, T.Cast("int64", y + x)],
                                             corners_at(itab, ftab, k, sy), corners_at(itab, ftab, k, sx), acc[0])
                    out[k, plane // P, plane % P] = acc[0]

    @T.prim_func
    def backward(g: T.handle, r: T.handle, it: T.handle, ft: T.handle, a: T.handle, gd: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        S = T.int64()
        A = T.int64()
        grad_out = T.match_buffer(g, (K, C // P, P), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        itab = T.match_buffer(it, (K, S), "int32")
        ftab = T.match_buffer(ft, (K, S), dt)
        T.match_buffer(a, (A,), "int32")  # the empty aux
        grad = T.match_buffer(gd, (N, C, H, W), dt)
        for task in T.parallel(N * C):
            n = task // C
            plane = task % C
            ph = (plane % P) // PW
            pw = plane % PW
            for h, w in T.grid(H, W):
                grad[n, plane, h, w] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    gh = T.meta_var(grids(rois, k)[0])
                    gw = T.meta_var(grids(rois, k)[1])
                    gv = grad_out[k, plane // P, plane % P]
                    for iy, ix in T.grid(gh, gw):
                        sy = 2 * (ph * gh + iy)
                        sx = 2 * PH * gh + 2 * (pw * gw + ix)
                        scatter(grad, lambda y, x: (n, plane, 0, T.Cast("int64", y + x)),
                                corners_at(itab, ftab, k, sy), corners_at(itab, ftab, k, sx), gv)

    return {**table_kernels, "forward": forward, "backward": backward}


def ps_roi_pool_kernels(spec) -> dict[str, tirx.PrimFunc]:
    """torchvision's ps_roi_pool: the *average* of each bin of a snapped box (size >= 1, no +1).

    torchvision's forward clips bins to [0, H-1) x [0, W-1) (the map's last
    row and column never count) while its backward clips to [0, H) x [0, W).
    We match its forward exactly and take the true gradient of that forward,
    so gradients differ from torchvision's only for bins touching the last
    row or column.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)

    def edge(rois, k, col, pooled, index, rounding, limit):
        return pool_edge(rois, k, col, scale, False, pooled, index, rounding, limit, dt)

    def area(hs, he, ws, we):
        return T.Cast(dt, (he - hs) * (we - ws))

    @T.prim_func
    def forward(d: T.handle, r: T.handle, o: T.handle, a: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        A = T.int64()
        data = T.match_buffer(d, (N, C, H, W), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        out = T.match_buffer(o, (K, C // P, P), dt)
        T.match_buffer(a, (A,), "int32")  # the empty aux
        for task in T.parallel(N * C):
            n = task // C
            plane = task % C
            ph = (plane % P) // PW
            pw = plane % PW
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    hs = edge(rois, k, 2, PH, ph, T.floor, H - 1)
                    he = edge(rois, k, 2, PH, ph + 1, T.ceil, H - 1)
                    ws = edge(rois, k, 1, PW, pw, T.floor, W - 1)
                    we = edge(rois, k, 1, PW, pw + 1, T.ceil, W - 1)
                    acc = T.alloc_buffer((1,), dt)
                    acc[0] = zero
                    for h, w in T.grid(he - hs, we - ws):
                        acc[0] = acc[0] + data[n, plane, hs + h, ws + w]
                    out[k, plane // P, plane % P] = T.if_then_else(
                        he <= hs or we <= ws, zero, acc[0] / area(hs, he, ws, we))

    @T.prim_func
    def backward(g: T.handle, r: T.handle, a: T.handle, gd: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        A = T.int64()
        grad_out = T.match_buffer(g, (K, C // P, P), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        T.match_buffer(a, (A,), "int32")  # the empty aux
        grad = T.match_buffer(gd, (N, C, H, W), dt)
        for task in T.parallel(N * C):
            n = task // C
            plane = task % C
            ph = (plane % P) // PW
            pw = plane % PW
            for h, w in T.grid(H, W):
                grad[n, plane, h, w] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    hs = edge(rois, k, 2, PH, ph, T.floor, H - 1)
                    he = edge(rois, k, 2, PH, ph + 1, T.ceil, H - 1)
                    ws = edge(rois, k, 1, PW, pw, T.floor, W - 1)
                    we = edge(rois, k, 1, PW, pw + 1, T.ceil, W - 1)
                    if he > hs and we > ws:
                        gv = grad_out[k, plane // P, plane % P] / area(hs, he, ws, we)
                        for h, w in T.grid(he - hs, we - ws):
                            grad[n, plane, hs + h, ws + w] += gv

    return {"forward": forward, "backward": backward}
