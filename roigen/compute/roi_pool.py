"""RoIPool's math as TIR: forward (max and argmax) and backward, from a RoIPoolSpec.

Same kernel contract and (image, channel block) tasks as `roi_align.py`;
`argmax` is the flat (K*C*PH*PW,) int32 holding the flat pixel index h*W + w of each
bin's first maximum in row-major order, or -1 for an empty bin (torchvision's).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..specs import RoIPoolSpec
from .sampling import c_round


def roi_pool_kernels(spec: RoIPoolSpec, lanes: int) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    P = PH * PW
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    # torchvision starts every bin at -FLT_MAX, whatever the dtype.
    lowest = tirx.const(-3.4028234663852886e38, dt)

    def snapped(rois, k, col):
        return T.Cast("int64", c_round(rois[k, col] * scale, dt))

    def size(rois, k, col):
        return T.max(snapped(rois, k, col + 2) - snapped(rois, k, col) + 1, tirx.const(1, "int64"))

    def bin_edge(rois, k, col, pooled, index, rounding, limit):
        """Start (floor) or end (ceil) of bin `index` along one axis, clipped to [0, limit]."""
        bin_size = T.Cast(dt, size(rois, k, col)) / T.Cast(dt, pooled)
        edge = T.Cast("int64", rounding(T.Cast(dt, index) * bin_size)) + snapped(rois, k, col)
        return T.min(T.max(edge, tirx.const(0, "int64")), limit)

    @T.prim_func
    def forward(d: T.handle, r: T.handle, o: T.handle, a: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        Cb = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        C = T.int64()
        data = T.match_buffer(d, (N, Cb, H, W, L), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        out = T.match_buffer(o, (K, C, P), dt)
        A = T.int64()
        argmax = T.match_buffer(a, (A,), "int32")
        for task in T.parallel(N * Cb):
            n = task // Cb
            cb = task % Cb
            tile = T.alloc_buffer((L, P), dt)
            atile = T.alloc_buffer((L, P), "int32")
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    for ph, pw in T.grid(PH, PW):
                        hstart = bin_edge(rois, k, 2, PH, ph, T.floor, H)
                        hend = bin_edge(rois, k, 2, PH, ph + 1, T.ceil, H)
                        wstart = bin_edge(rois, k, 1, PW, pw, T.floor, W)
                        wend = bin_edge(rois, k, 1, PW, pw + 1, T.ceil, W)
                        acc = T.alloc_buffer((L,), dt)
                        arg = T.alloc_buffer((L,), "int32")
                        for ci in T.vectorized(L):
                            acc[ci] = T.if_then_else(hend <= hstart or wend <= wstart, zero, lowest)
                            arg[ci] = -1
                        for h in range(hstart, hend):
                            for w in range(wstart, wend):
                                for ci in T.vectorized(L):
                                    # meta_var inlines `better`, so arg must update before acc.
                                    better = T.meta_var(data[n, cb, h, w, ci] > acc[ci])
                                    arg[ci] = T.Select(better, T.Cast("int32", h * W + w), arg[ci])
                                    acc[ci] = T.Select(better, data[n, cb, h, w, ci], acc[ci])
                        # Tiles in output order (channel-major), as in roi_align.py.
                        for ci in range(L):
                            tile[ci, ph * PW + pw] = acc[ci]
                            atile[ci, ph * PW + pw] = arg[ci]
                    for ci in range(T.min(L, C - cb * L)):
                        for p in range(P):
                            out[k, cb * L + ci, p] = tile[ci, p]
                            argmax[(k * C + cb * L + ci) * P + p] = atile[ci, p]

    @T.prim_func
    def backward(g: T.handle, r: T.handle, a: T.handle, gd: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        Cb = T.int64()
        H = T.int64()
        W = T.int64()
        K = T.int64()
        C = T.int64()
        grad_out = T.match_buffer(g, (K, C, P), dt)
        rois = T.match_buffer(r, (K, 5), dt)
        A = T.int64()
        argmax = T.match_buffer(a, (A,), "int32")
        grad = T.match_buffer(gd, (N, Cb, H, W, L), dt)
        for task in T.parallel(N * Cb):
            n = task // Cb
            cb = task % Cb
            for h, w in T.grid(H, W):
                for ci in T.vectorized(L):
                    grad[n, cb, h, w, ci] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    for ci in range(T.min(L, C - cb * L)):
                        for p in range(P):
                            pixel = argmax[(k * C + cb * L + ci) * P + p]
                            if pixel >= 0:
                                # grad[n, cb, 0, h*W + w] addresses pixel (h, w).
                                grad[n, cb, 0, T.Cast("int64", pixel), ci] += grad_out[k, cb * L + ci, p]

    return {"forward": forward, "backward": backward}
