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
                # Row by row: one destination row (W*L values) stays in L1 while
                # the L source rows of that h stream in.
                for h in range(H):
                    for ci in range(L):
                        if cb * L + ci < C:
                            for w in range(W):
                                dst[n, cb, h, w, ci] = src[n, cb * L + ci, h, w]
                        else:
                            for w in range(W):
                                dst[n, cb, h, w, ci] = zero
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
        if nchw:
            for task in T.parallel(N * Cb):
                n = task // Cb
                cb = task % Cb
                for h in range(H):
                    for ci in range(T.min(L, C - cb * L)):
                        for w in range(W):
                            dst[n, cb * L + ci, h, w] = src[n, cb, h, w, ci]
        else:
            for task in T.parallel(N * H):
                n = task // H
                h = task % H
                for w, c in T.grid(W, C):
                    dst[n, h, w, c] = src[n, c // L, h, w, c % L]

    return {"pack": pack, "unpack": unpack}
