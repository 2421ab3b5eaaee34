"""RoIPool's math as TIR, and RoI-SPP's (a pyramid of RoIPool grids in one pass per box).

Same channel blocks, (image, channel block) tasks and schedule options as
`_align.py` (`fuse`: each task converts its own slab of the caller's map or
gradient; `shuffle`: the output leaves through block transposes).  The
output is (K, D): for each grid (level) in order, C channels of GH*GW bins,
channel-major, so RoIPool's (K, C, PH, PW) is the one-level case.  `argmax`
(flat, K*D int32) holds each bin's first maximum in row-major order as the
pixel index h*W + w, or -1 for an empty bin (torchvision's rule).  With an
empty argmax (no gradient wanted) the forward tracks no winners: a bare max.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.levels import LOWEST, pick
from ..common.sampling import pool_edge
from ..common.signature import dims
from ._layout import block_macros, task_map
from ._stream import HELPERS, IMPORT, stream_fence, streamed
from ._transpose import bin_tile, max_tiles, tile_plan


def roi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return pool_family_kernels(spec, lanes, ((spec.pooled_height, spec.pooled_width),), **options)


def roi_spp_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return pool_family_kernels(spec, lanes, spec.grids, **options)


def pool_family_kernels(spec, lanes: int, grids, fuse: bool = False, shuffle: bool = False) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    L = lanes
    NL = len(grids)
    S = sum(gh * gw for gh, gw in grids)
    offsets = [sum(gh * gw for gh, gw in grids[:i]) for i in range(NL)]
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    lowest = tirx.const(LOWEST, dt)
    load, store = block_macros(spec.layout, dt, L)

    def GH(lv):
        return pick(lv, [g[0] for g in grids])

    def GW(lv):
        return pick(lv, [g[1] for g in grids])

    def OFF(lv):
        return pick(lv, offsets)

    # A pyramid of more bins than a tile holds goes out level by level in runs of rows,
    # lane by lane; and derives no level from another (that needs them all in the tile).
    chunked, tile_bins, chunk_rows = tile_plan(S, [gw for _, gw in grids])
    alloc_tile, alloc_bin, stash = max_tiles(dt, L, tile_bins)
    tile_shape, put_bin, move_bins, tiled = bin_tile(L, S, shuffle)
    move_out = streamed(move_bins, L, dt, shuffle, NL == 1)
    move_arg_out = streamed(move_bins, L, "int32", shuffle, NL == 1)
    stage_values = L * S if shuffle else 1  # the transposed run on its way out (_stream.streamed)

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

    # A level's bin edges of one box, found once per box and level (each is two roundings, a
    # division and a clamp) rather than at every bin: rows' starts and ends, then columns'.
    EDGES = max(max(gh, gw) for gh, gw in grids)

    @T.macro
    def box_edges(rois, k, lv, edges, H, W):
        for ph in range(GH(lv)):
            edges[0, ph] = edge(rois, k, 2, GH(lv), ph, T.floor, H)
            edges[1, ph] = edge(rois, k, 2, GH(lv), ph + 1, T.ceil, H)
        for pw in range(GW(lv)):
            edges[2, pw] = edge(rois, k, 1, GW(lv), pw, T.floor, W)
            edges[3, pw] = edge(rois, k, 1, GW(lv), pw + 1, T.ceil, W)

    @T.macro
    def scan_bin(data, dn, dcb, edges, ph, pw, acc, arg, W, track, filled, slot):
        # Bin (ph, pw) of the level whose `edges` are given: its maximum per channel (and
        # with `track`, the first pixel holding it); filled[slot]: whether it has any pixel.
        hstart = edges[0, ph]
        hend = edges[1, ph]
        wstart = edges[2, pw]
        wend = edges[3, pw]
        filled[slot] = T.Cast("int32", hstart < hend and wstart < wend)
        for ci in T.vectorized(L):
            acc[ci] = T.if_then_else(filled[slot] == 0, zero, lowest)
            arg[ci] = -1
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                for ci in T.vectorized(L):
                    v = T.meta_var(data[dn, dcb, h, w, ci])
                    if track:
                        # meta_var inlines `better`, so arg must update before acc.
                        better = T.meta_var(v > acc[ci])
                        arg[ci] = T.Select(better, T.Cast("int32", h * W + w), arg[ci])
                    acc[ci] = T.Select(v > acc[ci], v, acc[ci])

    @T.macro
    def derive_bin(tile, atile, lv, ph, pw, acc, arg, track, filled, seen):
        # Bin (ph, pw) of level lv as the union of its previous level's bins: the maximum
        # of their maxima, the earliest pixel (smallest h*W + w) winning ties; empty
        # parts are skipped, and a bin with no pixel at all is 0, as a scanned one is.
        seen[0] = 0
        for ci in T.vectorized(L):
            acc[ci] = lowest
            arg[ci] = -1
        for a, b in T.grid(RH(lv), RW(lv)):
            src = T.meta_var(OFF(lv - 1) + (ph * RH(lv) + a) * GW(lv - 1) + pw * RW(lv) + b)
            if filled[src] != 0:
                seen[0] = 1
                for ci in T.vectorized(L):
                    v = T.meta_var(tiled(tile, src, ci))
                    if track:
                        s = T.meta_var(tiled(atile, src, ci))
                        better = T.meta_var(v > acc[ci] or (v == acc[ci] and s >= 0 and (arg[ci] < 0 or s < arg[ci])))
                        arg[ci] = T.Select(better, s, arg[ci])
                    acc[ci] = T.Select(v > acc[ci], v, acc[ci])
        slot = T.meta_var(OFF(lv) + ph * GW(lv) + pw)
        filled[slot] = seen[0]
        if seen[0] == 0:
            for ci in T.vectorized(L):
                acc[ci] = zero

    @T.macro
    def pool_box(data, dn, dcb, rois, k, tile, atile, acc, arg, H, W, track, filled, seen, edges):
        # Every bin of box k into the tile (and, with `track`, their winners into atile).
        for lv in range(NL):
            if DERIVED(lv) == 0:
                box_edges(rois, k, lv, edges, H, W)
            for ph, pw in T.grid(GH(lv), GW(lv)):
                slot = T.meta_var(OFF(lv) + ph * GW(lv) + pw)
                if DERIVED(lv) == 1:
                    derive_bin(tile, atile, lv, ph, pw, acc, arg, track, filled, seen)
                else:
                    scan_bin(data, dn, dcb, edges, ph, pw, acc, arg, W, track, filled, slot)
                put_bin(tile, slot, acc)
                if track:
                    put_bin(atile, slot, arg)

    @T.macro
    def pool_boxes(data, dn, dcb, n, cb, rois, flat_out, argmax, K, C, D, A, H, W):
        # Every box of image n, block cb of the channels, read from slab [dn, dcb] of `data`.
        if chunked:
            ctile, catile = alloc_tile()
            filled = T.alloc_buffer((1,), "int32")
            edges = T.alloc_buffer((4, EDGES), "int64")
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    for lv in range(NL):
                        box_edges(rois, k, lv, edges, H, W)
                        for r0 in range((GH(lv) + ROWS(lv) - 1) // ROWS(lv)):
                            for r, pw in T.grid(T.min(ROWS(lv), GH(lv) - r0 * ROWS(lv)), GW(lv)):
                                acc, arg = alloc_bin()
                                scan_bin(data, dn, dcb, edges, r0 * ROWS(lv) + r, pw, acc, arg, W, True, filled, 0)
                                stash(ctile, catile, r * GW(lv) + pw, acc, arg)
                            rows = T.meta_var(T.min(ROWS(lv), GH(lv) - r0 * ROWS(lv)))
                            for ci, j in T.grid(T.min(L, C - cb * L), rows * GW(lv)):
                                q = T.meta_var(C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv)
                                               + r0 * ROWS(lv) * GW(lv) + j)
                                flat_out[k * D + q] = ctile[ci, j]
                                if A > 0:
                                    argmax[k * D + q] = catile[ci, j]
        else:
            tile = T.alloc_buffer(tile_shape, dt)
            atile = T.alloc_buffer(tile_shape, "int32")
            tr = T.alloc_buffer((2, L, L), dt)
            atr = T.alloc_buffer((2, L, L), "int32")
            stage = T.alloc_buffer((stage_values,), dt)
            astage = T.alloc_buffer((stage_values,), "int32")
            acc, arg = alloc_bin()
            filled = T.alloc_buffer((S,), "int32")
            seen = T.alloc_buffer((1,), "int32")
            edges = T.alloc_buffer((4, EDGES), "int64")
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    if A > 0:
                        pool_box(data, dn, dcb, rois, k, tile, atile, acc, arg, H, W, True, filled, seen, edges)
                    else:  # no gradient wanted: no winners to track
                        pool_box(data, dn, dcb, rois, k, tile, atile, acc, arg, H, W, False, filled, seen, edges)
                    # Each level's (box, block) run of the output is channel-major (_transpose.py).
                    for lv in range(NL):
                        base = T.meta_var(k * D + C * OFF(lv))
                        move_out(tile, tr, stage, flat_out, base, cb, C, GH(lv) * GW(lv), OFF(lv))
                        if A > 0:
                            move_arg_out(atile, atr, astage, argmax, base, cb, C, GH(lv) * GW(lv), OFF(lv))

    @T.macro
    def scatter_boxes(grad, dn, dcb, n, cb, grad_out, rois, argmax, K, C, D, H, W):
        # Block cb of image n's gradient, accumulated in slab [dn, dcb] of `grad`.
        for h, w in T.grid(H, W):
            for ci in T.vectorized(L):
                grad[dn, dcb, h, w, ci] = zero
        for k in range(K):
            if T.Cast("int64", rois[k, 0]) == n:
                for ci in range(T.min(L, C - cb * L)):
                    for lv in range(NL):
                        for p in range(GH(lv) * GW(lv)):
                            j = k * D + C * OFF(lv) + (cb * L + ci) * GH(lv) * GW(lv) + p
                            # An argmax is a pixel of this map, whoever forged it.
                            if argmax[j] >= 0 and T.Cast("int64", argmax[j]) < H * W:
                                # grad[dn, dcb, 0, h*W + w] addresses pixel (h, w).
                                grad[dn, dcb, 0, T.Cast("int64", argmax[j]), ci] += grad_out[k, j - k * D]

    map_buffer_shape, blocks = task_map(spec.layout, L, fuse)

    def channels(C, D):
        # Fused, the map's shape gives C; otherwise only the output's D = C * S does.
        return C if fuse else D // S

    N, Cb, H, W, K, C, D, A = dims("N Cb H W K C D A", "int64")  # Cb: unused when fused
    C = channels(C, D)
    @T.prim_func
    def forward(data: T.Buffer(map_buffer_shape(N, Cb, C, H, W), dt), rois: T.Buffer((K, 5), dt),
                out: T.Buffer((K, D), dt), argmax: T.Buffer((A,), "int32")):
        flat_out = T.decl_buffer((K * D,), dt, data=out.data)
        for task in T.parallel(N * blocks(Cb, C)):
            n, cb = unravel(task, (N, blocks(Cb, C)))
            with T.attr(0, IMPORT, HELPERS):
                if fuse:
                    slab = T.alloc_buffer((1, 1, H, W, L), dt)
                    load(data, slab, n, cb, 0, 0, C, H, W)
                    pool_boxes(slab, 0, 0, n, cb, rois, flat_out, argmax, K, C, D, A, H, W)
                else:
                    pool_boxes(data, n, cb, n, cb, rois, flat_out, argmax, K, C, D, A, H, W)
                stream_fence()

    N, Cb, H, W, K, C, D, A = dims("N Cb H W K C D A", "int64")  # Cb: unused when fused
    C = channels(C, D)
    @T.prim_func
    def backward(grad_out: T.Buffer((K, D), dt), rois: T.Buffer((K, 5), dt), argmax: T.Buffer((A,), "int32"),
                 grad: T.Buffer(map_buffer_shape(N, Cb, C, H, W), dt)):
        for task in T.parallel(N * blocks(Cb, C)):
            n, cb = unravel(task, (N, blocks(Cb, C)))
            if fuse:
                slab = T.alloc_buffer((1, 1, H, W, L), dt)
                scatter_boxes(slab, 0, 0, n, cb, grad_out, rois, argmax, K, C, D, H, W)
                store(slab, grad, n, cb, 0, 0, C, H, W)
            else:
                scatter_boxes(grad, n, cb, n, cb, grad_out, rois, argmax, K, C, D, H, W)

    return {"forward": forward, "backward": backward}
