"""Layout kernels: PyTorch's NCHW / channels_last maps to and from channel blocks.

Every RoI kernel reads the map as (N, Cb, H, W, L): the L channels of one
pixel are one vector, and one (image, block) slab is contiguous.  `pack`
converts the caller's memory format into that (padding channels with zeros),
`unpack` turns a blocked gradient back.  They run in the same thread pool as
the RoI kernels, and their time is part of every measured call.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T


def layout_kernels(layout: str, dt: str, lanes: int) -> dict[str, tirx.PrimFunc]:
    L = lanes
    zero = tirx.const(0.0, dt)
    nchw = layout == "NCHW"

    @T.prim_func
    def pack(s: T.handle, d: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        Cb = T.int64()
        src = T.match_buffer(s, (N, C, H, W) if nchw else (N, H, W, C), dt)
        dst = T.match_buffer(d, (N, Cb, H, W, L), dt)
        for task in T.parallel(N * Cb):
            n = task // Cb
            cb = task % Cb
            if nchw:
                # One vector per pixel: lanes gathered from L rows, stored whole.
                # (Row-at-a-time scalar copies measured 1.7x slower.)
                for h, w in T.grid(H, W):
                    for ci in T.vectorized(L):
                        dst[n, cb, h, w, ci] = T.if_then_else(
                            cb * L + ci < C, src[n, T.min(cb * L + ci, C - 1), h, w], zero)
            else:
                if (cb + 1) * L <= C:
                    for h, w in T.grid(H, W):
                        for ci in T.vectorized(L):
                            dst[n, cb, h, w, ci] = src[n, h, w, cb * L + ci]
                else:
                    for h, w, ci in T.grid(H, W, L):
                        dst[n, cb, h, w, ci] = T.if_then_else(
                            cb * L + ci < C, src[n, h, w, T.min(cb * L + ci, C - 1)], zero)

    @T.prim_func
    def unpack(s: T.handle, d: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int64()
        C = T.int64()
        H = T.int64()
        W = T.int64()
        Cb = T.int64()
        src = T.match_buffer(s, (N, Cb, H, W, L), dt)
        dst = T.match_buffer(d, (N, C, H, W) if nchw else (N, H, W, C), dt)
        for task in T.parallel(N * Cb):
            n = task // Cb
            cb = task % Cb
            if (cb + 1) * L <= C:
                for h, w in T.grid(H, W):
                    for ci in T.vectorized(L):
                        if nchw:
                            dst[n, cb * L + ci, h, w] = src[n, cb, h, w, ci]
                        else:
                            dst[n, h, w, cb * L + ci] = src[n, cb, h, w, ci]
            else:  # the last, partial block
                for h, ci, w in T.grid(H, C - cb * L, W):
                    if nchw:
                        dst[n, cb * L + ci, h, w] = src[n, cb, h, w, ci]
                    else:
                        dst[n, h, w, cb * L + ci] = src[n, cb, h, w, ci]

    return {"pack": pack, "unpack": unpack}
