"""SPPnet's spatial pyramid pooling over the whole map, as TIR.

Each level n splits the map into n x n adaptive bins, bin i spanning
[floor(i*H/n), ceil((i+1)*H/n)) in exact integer arithmetic (as
adaptive_max_pool2d), so every level is exactly n x n, even for maps smaller
than n.  Output (N, D), D = C * sum(n*n): levels in order, each channel-major,
the pool family's layout (_pool.py).  Max mode keeps the first maximum's
pixel index h*W + w in `argmax`; avg divides by the bin's area.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.levels import hi, lo, pick
from ..common.signature import dims
from . import by_direction
from ._transpose import max_tiles, tile_plan


def spp_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    L = lanes
    levels = list(spec.levels)
    NL = len(levels)
    S = spec.bins
    offsets = [sum(n * n for n in levels[:i]) for i in range(NL)]
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    acc_init = zero if spec.mode == "avg" else tirx.const(float("-inf"), dt)
    avg = spec.mode == "avg"

    def LV(lv):
        return pick(lv, levels)

    def OFF(lv):
        return pick(lv, offsets)

    chunked, tile_bins, chunk_rows = tile_plan(S, levels)
    alloc_tile, alloc_bin, stash = max_tiles(dt, L, tile_bins)

    def ROWS(lv):
        return pick(lv, chunk_rows)

    @T.macro
    def pool_bin(data, n, cb, lv, i, j, acc, arg, H, W):
        # Bin (i, j) of level lv: max (first argmax) or mean per channel.
        for ci in T.vectorized(L):
            acc[ci] = acc_init
            arg[ci] = -1
        for h in range(lo(i, H, LV(lv)), hi(i, H, LV(lv))):
            for w in range(lo(j, W, LV(lv)), hi(j, W, LV(lv))):
                for ci in T.vectorized(L):
                    if avg:
                        acc[ci] = acc[ci] + data[n, cb, h, w, ci]
                    else:
                        # The first strict maximum wins; meta_var inlines `better`,
                        # so arg must update before acc.
                        better = T.meta_var(data[n, cb, h, w, ci] > acc[ci])
                        arg[ci] = T.Select(better, T.Cast("int32", h * W + w), arg[ci])
                        acc[ci] = T.Select(better, data[n, cb, h, w, ci], acc[ci])
        if avg:
            area = T.meta_var((hi(i, H, LV(lv)) - lo(i, H, LV(lv))) * (hi(j, W, LV(lv)) - lo(j, W, LV(lv))))
            for ci in range(L):
                acc[ci] = acc[ci] / T.Cast(dt, area)

    N, Cb, H, W, D, A = dims("N Cb H W D A", "int64")
    @T.prim_func
    def forward(data: T.Buffer((N, Cb, H, W, L), dt), out: T.Buffer((N, D), dt),
                argmax: T.Buffer((A,), "int32")):
        C = T.meta_var(D // S)
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            tile, atile = alloc_tile()
            if chunked:
                for lv in range(NL):
                    for r0 in range((LV(lv) + ROWS(lv) - 1) // ROWS(lv)):
                        for r, j in T.grid(T.min(ROWS(lv), LV(lv) - r0 * ROWS(lv)), LV(lv)):
                            acc, arg = alloc_bin()
                            pool_bin(data, n, cb, lv, r0 * ROWS(lv) + r, j, acc, arg, H, W)
                            stash(tile, atile, r * LV(lv) + j, acc, arg)
                        for ci, p in T.grid(T.min(L, C - cb * L), T.min(ROWS(lv), LV(lv) - r0 * ROWS(lv)) * LV(lv)):
                            q = T.meta_var(C * OFF(lv) + (cb * L + ci) * LV(lv) * LV(lv) + r0 * ROWS(lv) * LV(lv) + p)
                            out[n, q] = tile[ci, p]
                            if not avg:
                                if A > 0:
                                    argmax[n * D + q] = atile[ci, p]
            else:
                for lv in range(NL):
                    for i, j in T.grid(LV(lv), LV(lv)):
                        acc, arg = alloc_bin()
                        pool_bin(data, n, cb, lv, i, j, acc, arg, H, W)
                        stash(tile, atile, OFF(lv) + i * LV(lv) + j, acc, arg)
                for ci in range(T.min(L, C - cb * L)):
                    for lv in range(NL):
                        for p in range(LV(lv) * LV(lv)):
                            out[n, C * OFF(lv) + (cb * L + ci) * LV(lv) * LV(lv) + p] = tile[ci, OFF(lv) + p]
                            if not avg:
                                if A > 0:
                                    argmax[n * D + C * OFF(lv) + (cb * L + ci) * LV(lv) * LV(lv) + p] = (
                                        atile[ci, OFF(lv) + p])

    N, Cb, H, W, D, A = dims("N Cb H W D A", "int64")
    @T.prim_func
    def backward(grad_out: T.Buffer((N, D), dt), argmax: T.Buffer((A,), "int32"),
                 grad: T.Buffer((N, Cb, H, W, L), dt)):
        C = T.meta_var(D // S)
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            gvec = T.alloc_buffer((L,), dt)
            for h, w in T.grid(H, W):
                for ci in T.vectorized(L):
                    grad[n, cb, h, w, ci] = zero
            for lv in range(NL):
                for i, j in T.grid(LV(lv), LV(lv)):
                    if avg:
                        area = T.meta_var((hi(i, H, LV(lv)) - lo(i, H, LV(lv))) * (hi(j, W, LV(lv)) - lo(j, W, LV(lv))))
                        for ci in range(L):
                            gvec[ci] = T.if_then_else(
                                cb * L + ci < C,
                                grad_out[n, C * OFF(lv) + T.min(cb * L + ci, C - 1) * LV(lv) * LV(lv) + i * LV(lv) + j],
                                zero) * (one / T.Cast(dt, area))
                        for h in range(lo(i, H, LV(lv)), hi(i, H, LV(lv))):
                            for w in range(lo(j, W, LV(lv)), hi(j, W, LV(lv))):
                                for ci in T.vectorized(L):
                                    grad[n, cb, h, w, ci] += gvec[ci]
                    else:
                        for ci in range(T.min(L, C - cb * L)):
                            q = C * OFF(lv) + (cb * L + ci) * LV(lv) * LV(lv) + i * LV(lv) + j
                            # An argmax is a pixel of this map, whoever forged it.
                            if argmax[n * D + q] >= 0 and T.Cast("int64", argmax[n * D + q]) < H * W:
                                grad[n, cb, 0, T.Cast("int64", argmax[n * D + q]), ci] += grad_out[n, q]

    return {"forward": forward, "backward": backward}


def kernels(spec, schedule) -> dict:
    return by_direction(spec, schedule, spp_kernels)
