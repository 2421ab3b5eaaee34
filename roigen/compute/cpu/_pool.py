"""RoIPool's math as TIR, and RoI-SPP's (a pyramid of RoIPool grids in one pass per box).

Same channel blocks and (image, channel block) tasks as `_align.py`.  The
output is (K, D): for each grid (level) in order, C channels of GH*GW bins,
channel-major, so RoIPool's (K, C, PH, PW) is the one-level case.  `argmax`
(flat, K*D int32) holds each bin's first maximum in row-major order as the
pixel index h*W + w, or -1 for an empty bin (torchvision's rule).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.levels import LOWEST, pick
from ..common.sampling import pool_edge
from ..common.signature import dims
from ._transpose import max_tiles, tile_plan


def roi_pool_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    return pool_family_kernels(spec, lanes, ((spec.pooled_height, spec.pooled_width),))


def roi_spp_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    return pool_family_kernels(spec, lanes, spec.grids)


def pool_family_kernels(spec, lanes: int, grids) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    L = lanes
    NL = len(grids)
    S = sum(gh * gw for gh, gw in grids)
    offsets = [sum(gh * gw for gh, gw in grids[:i]) for i in range(NL)]
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    lowest = tirx.const(LOWEST, dt)

    def GH(lv):
        return pick(lv, [g[0] for g in grids])

    def GW(lv):
        return pick(lv, [g[1] for g in grids])

    def OFF(lv):
        return pick(lv, offsets)

    # A chunked pyramid derives no level from another (that needs them all in the tile).
    chunked, tile_bins, chunk_rows = tile_plan(S, [gw for _, gw in grids])
    alloc_tile, alloc_bin, stash = max_tiles(dt, L, tile_bins)

    def ROWS(lv):
        return pick(lv, chunk_rows)

    # A level whose bins are exact unions of the previous level's (each side
    # divided by a power of two, so the float bin edges coincide) is combined
    # from that level's maxima instead of scanning the box again: RoI-SPP's
    # (4, 2, 1) reads each box once.
    def derivable(lv):
        if lv == 0:
            return False
        (ph0, pw0), (ph1, pw1) = grids[lv - 1], grids[lv]
        ratios = (ph0 // ph1, pw0 // pw1)
        return ph0 % ph1 == 0 and pw0 % pw1 == 0 and all(r & (r - 1) == 0 for r in ratios)

    derived = [int(derivable(lv) and not chunked) for lv in range(NL)]
    ratio_h = [grids[lv - 1][0] // grids[lv][0] if derived[lv] else 1 for lv in range(NL)]
    ratio_w = [grids[lv - 1][1] // grids[lv][1] if derived[lv] else 1 for lv in range(NL)]

    def DERIVED(lv):
        return pick(lv, derived)

    def RH(lv):
        return pick(lv, ratio_h)

    def RW(lv):
        return pick(lv, ratio_w)

    def edge(rois, k, col, pooled, index, rounding, limit):
        return pool_edge(rois, k, col, scale, True, pooled, index, rounding, limit, dt)

    @T.macro
    def scan_bin(data, n, cb, rois, k, lv, ph, pw, acc, arg, H, W):
        # Bin (ph, pw) of level lv of box k: its maximum and first argmax per channel.
        hstart = edge(rois, k, 2, GH(lv), ph, T.floor, H)
        hend = edge(rois, k, 2, GH(lv), ph + 1, T.ceil, H)
        wstart = edge(rois, k, 1, GW(lv), pw, T.floor, W)
        wend = edge(rois, k, 1, GW(lv), pw + 1, T.ceil, W)
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

    N, Cb, H, W, K, D, A = dims("N Cb H W K D A", "int64")
    @T.prim_func
    def forward(data: T.Buffer((N, Cb, H, W, L), dt), rois: T.Buffer((K, 5), dt), out: T.Buffer((K, D), dt),
                argmax: T.Buffer((A,), "int32")):
        C = T.meta_var(D // S)
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            tile, atile = alloc_tile()
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    if chunked:
                        for lv in range(NL):
                            for r0 in range((GH(lv) + ROWS(lv) - 1) // ROWS(lv)):
                                for r, pw in T.grid(T.min(ROWS(lv), GH(lv) - r0 * ROWS(lv)), GW(lv)):
                                    acc, arg = alloc_bin()
                                    scan_bin(data, n, cb, rois, k, lv, r0 * ROWS(lv) + r, pw, acc, arg, H, W)
                                    stash(tile, atile, r * GW(lv) + pw, acc, arg)
                                rows = T.meta_var(T.min(ROWS(lv), GH(lv) - r0 * ROWS(lv)))
                                for ci, j in T.grid(T.min(L, C - cb * L), rows * GW(lv)):
                                    q = T.meta_var(C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv)
                                                   + r0 * ROWS(lv) * GW(lv) + j)
                                    out[k, q] = tile[ci, j]
                                    if A > 0:
                                        argmax[k * D + q] = atile[ci, j]
                    else:
                        for lv in range(NL):
                            if DERIVED(lv) == 1:
                                # Union of the previous level's bins: combine their maxima,
                                # the earliest pixel (smallest h*W + w) winning ties.
                                for ph, pw in T.grid(GH(lv), GW(lv)):
                                    acc, arg = alloc_bin()
                                    new_acc, new_arg = alloc_bin()
                                    for ci in T.vectorized(L):
                                        acc[ci] = zero
                                        arg[ci] = -1
                                    for a, b in T.grid(RH(lv), RW(lv)):
                                        src = T.meta_var(OFF(lv - 1) + (ph * RH(lv) + a) * GW(lv - 1) + pw * RW(lv) + b)
                                        for ci in T.vectorized(L):
                                            better = T.meta_var(atile[ci, src] >= 0 and (
                                                arg[ci] < 0 or tile[ci, src] > acc[ci]
                                                or (tile[ci, src] == acc[ci] and atile[ci, src] < arg[ci])))
                                            new_acc[ci] = T.Select(better, tile[ci, src], acc[ci])
                                            new_arg[ci] = T.Select(better, atile[ci, src], arg[ci])
                                        for ci in T.vectorized(L):
                                            acc[ci] = new_acc[ci]
                                            arg[ci] = new_arg[ci]
                                    stash(tile, atile, OFF(lv) + ph * GW(lv) + pw, acc, arg)
                            else:
                                for ph, pw in T.grid(GH(lv), GW(lv)):
                                    acc, arg = alloc_bin()
                                    scan_bin(data, n, cb, rois, k, lv, ph, pw, acc, arg, H, W)
                                    # Tiles in output order (channel-major), as in _align.py.
                                    stash(tile, atile, OFF(lv) + ph * GW(lv) + pw, acc, arg)
                        for ci in range(T.min(L, C - cb * L)):
                            for lv in range(NL):
                                for p in range(GH(lv) * GW(lv)):
                                    out[k, C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv) + p] = tile[ci, OFF(lv) + p]
                        if A > 0:  # an empty argmax: no gradient wanted
                            for ci in range(T.min(L, C - cb * L)):
                                for lv in range(NL):
                                    for p in range(GH(lv) * GW(lv)):
                                        j = k * D + C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv) + p
                                        argmax[j] = atile[ci, OFF(lv) + p]

    N, Cb, H, W, K, D, A = dims("N Cb H W K D A", "int64")
    @T.prim_func
    def backward(grad_out: T.Buffer((K, D), dt), rois: T.Buffer((K, 5), dt), argmax: T.Buffer((A,), "int32"),
                 grad: T.Buffer((N, Cb, H, W, L), dt)):
        C = T.meta_var(D // S)
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            for h, w in T.grid(H, W):
                for ci in T.vectorized(L):
                    grad[n, cb, h, w, ci] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    for ci in range(T.min(L, C - cb * L)):
                        for lv in range(NL):
                            for p in range(GH(lv) * GW(lv)):
                                j = k * D + C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv) + p
                                # An argmax is a pixel of this map, whoever forged it.
                                if argmax[j] >= 0 and T.Cast("int64", argmax[j]) < H * W:
                                    # grad[n, cb, 0, h*W + w] addresses pixel (h, w).
                                    grad[n, cb, 0, T.Cast("int64", argmax[j]), ci] += grad_out[k, j - k * D]

    return {"forward": forward, "backward": backward}
