"""Layout kernels: PyTorch's NCHW / channels_last maps to and from channel blocks.

Every RoI kernel reads the map as (N, Cb, H, W, L): the L channels of one
pixel are one vector, and one (image, block) slab is contiguous.  `pack`
converts the caller's memory format into that (padding channels with zeros),
`unpack` turns a blocked gradient back.  They run in the same thread pool as
the RoI kernels, and their time is part of every measured call.

The conversion of one (image, block) slab is a macro (`block_macros`) so that
a kernel can also do it inside its own task, on a slab that stays in cache
(the CPU schedule's `fuse` knob), instead of as a separate pass over memory.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.signature import dims
from ._transpose import block_transpose, result_slot

# The layout kernel each direction of a channel-block op runs, unless its kernels
# convert the layout themselves (the CPU schedule's `fuse`).
LAYOUT_PASS = {"forward": "pack", "backward": "unpack"}


def block_macros(layout: str, dt: str, lanes: int):
    """(load, store): macros converting block `cb` of image `n` between the caller's
    map and slab [dn, dcb] of a blocked buffer (N', Cb', H, W, L)."""
    L = lanes
    zero = tirx.const(0.0, dt)
    nchw = layout == "NCHW"
    # NCHW loads at 16 lanes or more go through block transposes, below that pixel by pixel:
    # converting a 2 x 256 x 200 x 272 map took 4.9 ms against 8.7 at 16 lanes (c4_head's
    # 1024 x 50 x 68: 0.5 against 0.8), but 3.8-3.9 against 3.5 at 8 lanes.
    transpose = block_transpose(L) if L >= 16 else None
    slot = result_slot(L)

    @T.macro
    def gather_pixels(src, dst, n, cb, dn, dcb, C, h, first, W):
        # Pixels first .. W-1 of row h, one vector each: lanes gathered from L planes.
        for w in range(first, W):
            for ci in T.vectorized(L):
                dst[dn, dcb, h, w, ci] = T.if_then_else(
                    cb * L + ci < C, src[n, T.min(cb * L + ci, C - 1), h, w], zero)

    @T.macro
    def load(src, dst, n, cb, dn, dcb, C, H, W):
        if nchw:
            if transpose is not None and (cb + 1) * L <= C:
                # L pixels at a time: a vector from each of the L planes, turned into a
                # vector per pixel by a block transpose; the row's last W % L pixels are
                # gathered.  (Row-at-a-time scalar copies were slower than either.)
                tr = T.alloc_buffer((2, L, L), dt)
                for h in range(H):
                    for chunk in range(W // L):
                        for i in T.unroll(L):
                            tr[1, i, T.Ramp(0, 1, L)] = src[n, cb * L + i, h, T.Ramp(chunk * L, 1, L)]
                        transpose(tr)
                        for j in T.unroll(L):
                            dst[dn, dcb, h, chunk * L + j, T.Ramp(0, 1, L)] = tr[slot, j, T.Ramp(0, 1, L)]
                    gather_pixels(src, dst, n, cb, dn, dcb, C, h, W - W % L, W)
            else:
                for h in range(H):
                    gather_pixels(src, dst, n, cb, dn, dcb, C, h, 0, W)
        else:
            if (cb + 1) * L <= C:
                for h, w in T.grid(H, W):
                    for ci in T.vectorized(L):
                        dst[dn, dcb, h, w, ci] = src[n, h, w, cb * L + ci]
            else:
                for h, w, ci in T.grid(H, W, L):
                    dst[dn, dcb, h, w, ci] = T.if_then_else(
                        cb * L + ci < C, src[n, h, w, T.min(cb * L + ci, C - 1)], zero)

    @T.macro
    def store(src, dst, n, cb, sn, scb, C, H, W):
        if (cb + 1) * L <= C:
            for h, w in T.grid(H, W):
                for ci in T.vectorized(L):
                    if nchw:
                        dst[n, cb * L + ci, h, w] = src[sn, scb, h, w, ci]
                    else:
                        dst[n, h, w, cb * L + ci] = src[sn, scb, h, w, ci]
        else:  # the last, partial block
            for h, ci, w in T.grid(H, C - cb * L, W):
                if nchw:
                    dst[n, cb * L + ci, h, w] = src[sn, scb, h, w, ci]
                else:
                    dst[n, h, w, cb * L + ci] = src[sn, scb, h, w, ci]

    return load, store


def map_shape(layout: str, N, C, H, W) -> tuple:
    """The caller's map as the kernels declare it: NCHW, or NHWC for channels_last."""
    return (N, C, H, W) if layout == "NCHW" else (N, H, W, C)


def task_map(layout: str, lanes: int, fuse: bool):
    """(buffer_shape, blocks) of a channel-block kernel built with or without `fuse`:
    `buffer_shape(N, Cb, C, H, W)`, the map (or gradient) it takes: the caller's when
    fused, else channel blocks; `blocks(Cb, C)`, its channel blocks, one task each per image."""

    def buffer_shape(N, Cb, C, H, W):
        return map_shape(layout, N, C, H, W) if fuse else (N, Cb, H, W, lanes)

    def blocks(Cb, C):
        return (C + lanes - 1) // lanes if fuse else Cb

    return buffer_shape, blocks


def layout_kernels(layout: str, dt: str, lanes: int) -> dict[str, tirx.PrimFunc]:
    L = lanes
    load, store = block_macros(layout, dt, lanes)

    N, C, H, W, Cb = dims("N C H W Cb", "int64")
    @T.prim_func
    def pack(src: T.Buffer(map_shape(layout, N, C, H, W), dt), dst: T.Buffer((N, Cb, H, W, L), dt)):
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            load(src, dst, n, cb, n, cb, C, H, W)

    N, C, H, W, Cb = dims("N C H W Cb", "int64")
    @T.prim_func
    def unpack(src: T.Buffer((N, Cb, H, W, L), dt), dst: T.Buffer(map_shape(layout, N, C, H, W), dt)):
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            store(src, dst, n, cb, n, cb, C, H, W)

    return {"pack": pack, "unpack": unpack}
