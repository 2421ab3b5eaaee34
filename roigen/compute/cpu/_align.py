"""The align family's math as TIR (RoIAlign, RoIWarp): forward and backward from a spec.

Kernel contract (shared by the channel-block kernels, see `roigen.compute`):
- `data`/`grad`: the feature map in channel blocks, (N, Cb, H, W, L),
  L = the schedule's vector lanes, channels zero-padded to Cb*L; or, built
  with `fuse`, the caller's map (N, C, H, W), or (N, H, W, C) for NHWC.
- `rois`: (K, spec.row_columns) rows (batch, x1, y1, x2, y2, any per-bin offsets) in the
  compute dtype, batch indices already checked to lie in [0, N).
- `itab`/`ftab`: the per-box sample tables (K, S) from `tables`.
- `out`/`grad_out`: (K, C, PH*PW), torchvision's NCHW output, contiguous.
- `argmax`: flat (K*C*PH*PW,) int32, the winning sample of a bin in max mode
  (iy*gw + ix, -1 for an empty bin); size 0 in avg mode, or when no gradient
  is wanted (the kernels test its size).

Work is split into (image, channel block) tasks: a task reads one (H, W, L)
slab of the map, which stays in L2 while every box of that image samples it,
and in backward it owns that slab of the gradient, so threads never write the
same memory and the result is deterministic without atomics.  Fused, the task
first converts its slab into a scratch buffer (and the backward converts its
slab of the gradient back on the way out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from ...limits import SAMPLE_ENTRIES, SAMPLE_TABLE_ENTRIES, keeps_samples, kept_entries
from ...specs import RoIAlignSpec, RoIWarpSpec
from ..common.bilinear import corners_at, hold_macro, interpolate, scatter_macro
from ..common.indexing import unravel
from ..common.integral import pair_grid
from ..common.sampling import axis_corners, axis_table_macro, box_rule, inverse_count, sample_grid
from ..common.signature import dims
from ._layout import block_macros, task_map
from ._stream import HELPERS, IMPORT, stream_fence, streamed
from ._transpose import MAX_TILE_BINS, bin_tile


def roi_align_kernels(spec: RoIAlignSpec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec)), **options)


def roi_warp_kernels(spec: RoIWarpSpec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    """RoIWarp: RoIAlign's bins and samples in a box snapped to the grid (C round)."""
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec)), **options)


@dataclass(frozen=True)
class Geometry:
    """Where an align-family op's samples fall, as its kernels read them.

    `grids(rois, k)` -> (gh, gw), box k's samples per bin along y and x;
    `kernels`: `table_size` and `tables`, filling per-box tables (K, S) once per
    call; `corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs),
    the corners of sample (iy, ix) of bin (ph, pw) along y (row offsets, row*W)
    and x (columns), each `(low, high, w_low, w_high)` (see common/bilinear.py),
    with 1/count folded into the y weights in avg mode.  With `per_sample` (specs whose
    `per_sample_tables` is set), a box that `limits.keeps_samples` reads every sample's
    corners from its tables instead (`sample_table_corners`), and `corners` serves the others,
    whose `position(rois, ftab, k, ph, pw, iy, ix, gh, gw)` -> (y, x) places a sample.
    """

    grids: Callable
    kernels: dict
    corners: Callable
    per_sample: bool = False
    position: Callable | None = None


def sample_index(PW, ph, pw, iy, ix, gh, gw):
    """Sample (iy, ix) of bin (ph, pw) in a box's per-sample tables: its offset at itab[k, n],
    its weights at ftab[k, 3n : 3n + 3] (`sample_table_macro`)."""
    return ((ph * PW + pw) * gh + iy) * gw + ix


def sample_table_corners(spec):
    """`corners` of a box that keeps every sample's corners (`sample_table_macro`)."""
    dt = spec.compute_dtype
    PW = spec.pooled_width
    one = tirx.const(1.0, dt)

    def corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W):
        n = sample_index(PW, ph, pw, iy, ix, gh, gw)
        first = T.Cast("int64", itab[k, n])
        lx = ftab[k, SAMPLE_ENTRIES * n + 2]
        return ((first, first + corner_step(H, W), ftab[k, SAMPLE_ENTRIES * n], ftab[k, SAMPLE_ENTRIES * n + 1]),
                (T.int64(0), corner_step(W, T.int64(1)), one - lx, lx))

    return corners


def corner_step(size, stride):
    """The step from a sample's low corner to its high one along an axis of `size` pixels:
    `stride`, or 0 on a one-pixel axis (both corners are its pixel)."""
    return T.if_then_else(size > 1, stride, T.int64(0))


def table_size_of(spec, gh, gw):
    """A box's table entries as a TIR expression (limits.table_entries)."""
    PH, PW = spec.pooled_size
    separable = 2 * (PH * gh + PW * gw)
    if not spec.per_sample_tables:
        return separable
    return T.Select(keeps_samples(spec, gh, gw), kept_entries(spec, gh, gw), separable)


def per_sample_geometry(spec, grids, terms, place) -> Geometry:
    """The Geometry of an op whose sample is not a row sample times a column sample (rotated
    and deformable boxes), but whose position is still found from one pair of terms per axis.

    `grids(rois, k)` -> (gh, gw); `terms(rois, k, col, s, grid)` -> the two terms of sample s
    along x (col 1) or y (col 2), bin s // grid; `place(rois, k, ph, pw, row, column)` ->
    (y, x), the position of the sample of bin (ph, pw) whose row terms are `row` and column
    terms `column` (pairs of values).

    A box that `limits.keeps_samples` keeps every sample's corners in its tables
    (`sample_table_macro`): they are found once per box, not once per channel block as the
    sample is read.  The others keep the terms, roi_align's table size, 2 * (PH*gh + PW*gw),
    y terms first (itab unused, filled with 0: pixel offsets that are in the map, as every
    table's), and `corners` places the sample as it reads it.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    ROW = spec.row_columns
    fill_samples = sample_table_macro(spec, terms, place)

    (K,) = dims("K", "int64")
    @T.prim_func
    def table_size(rois: T.Buffer((K, ROW), dt), size: T.Buffer((1,), "int64")):
        size[0] = T.int64(1)
        for k in range(K):
            size[0] = T.max(size[0], table_size_of(spec, grids(rois, k)[0], grids(rois, k)[1]))

    K, S = dims("K S", "int64")
    @T.prim_func
    def tables(rois: T.Buffer((K, ROW), dt), itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt),
               H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh = T.meta_var(grids(rois, k)[0])
            gw = T.meta_var(grids(rois, k)[1])
            if keeps_samples(spec, gh, gw):
                fill_samples(rois, itab, ftab, k, gh, gw, H, W)
            else:
                for s in range(PH * gh):
                    ftab[k, 2 * s] = terms(rois, k, 2, s, gh)[0]
                    ftab[k, 2 * s + 1] = terms(rois, k, 2, s, gh)[1]
                    itab[k, 2 * s] = 0
                    itab[k, 2 * s + 1] = 0
                for s in range(PW * gw):
                    ftab[k, 2 * PH * gh + 2 * s] = terms(rois, k, 1, s, gw)[0]
                    ftab[k, 2 * PH * gh + 2 * s + 1] = terms(rois, k, 1, s, gw)[1]
                    itab[k, 2 * PH * gh + 2 * s] = 0
                    itab[k, 2 * PH * gh + 2 * s + 1] = 0

    def corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W):
        y, x = separable_position(rois, ftab, k, ph, pw, iy, ix, gh, gw)
        return point_corners(y, x, gh, gw, H, W, dt)

    def separable_position(rois, ftab, k, ph, pw, iy, ix, gh, gw):
        r = 2 * (ph * gh + iy)
        c = 2 * PH * gh + 2 * (pw * gw + ix)
        return place(rois, k, ph, pw, (ftab[k, r], ftab[k, r + 1]), (ftab[k, c], ftab[k, c + 1]))

    return Geometry(grids, {"table_size": table_size, "tables": tables}, corners, per_sample=True,
                    position=separable_position)


def point_corners(y, x, gh, gw, H, W, dt):
    """(ys, xs) of a sample at (y, x) as `Geometry.corners` gives them: rows times W, the y
    weights carrying 1/count."""
    inv = inverse_count(gh, gw, dt)
    y0, y1, wy0, wy1 = axis_corners(y, H, dt)
    return (y0 * W, y1 * W, wy0 * inv, wy1 * inv), axis_corners(x, W, dt)


def sample_table_macro(spec, terms, place):
    """A macro filling box k's tables with every sample's corners, for a box that
    `limits.keeps_samples` (`per_sample_geometry` says what `terms` and `place` are).

    A sample keeps SAMPLE_ENTRIES entries, so that the kernels, which read them once per
    channel block, move as few bytes as they can: its low corner's offset (row*W + col,
    itab), and (y low weight, y high weight, x high weight) (ftab), the x low weight being
    1 - the high one.  Its high corners are a fixed step away (`corner_step`): where an axis'
    corners coincide (at or past its last pixel, which is read alone), they become the pixel
    before it, weighted 0, and the last, weighted in full: the same sum.  A sample outside
    the map along x gets y weights of 0.  The column terms are found once per box, the row
    terms once per row of samples.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    # A kept box has at most this many columns of samples (it has at least one row per bin).
    columns_kept = max(1, SAMPLE_TABLE_ENTRIES // (SAMPLE_ENTRIES * PH))
    hold = hold_macro()

    @T.macro
    def fill(rois, itab, ftab, k, gh, gw, H, W):
        columns = T.alloc_buffer((columns_kept, 2), dt)
        row = T.alloc_buffer((2,), dt)
        at = T.alloc_buffer((2,), dt)
        held = T.alloc_buffer((4,), "int64")
        weight = T.alloc_buffer((4,), dt)
        # itab's entries past the offsets are not read; they are set to pixel 0 all the same,
        # as every table entry addresses the map.
        for s in range(PH * PW * gh * gw, SAMPLE_ENTRIES * PH * PW * gh * gw):
            itab[k, s] = 0
        for s in range(PW * gw):
            columns[s, 0] = terms(rois, k, 1, s, gw)[0]
            columns[s, 1] = terms(rois, k, 1, s, gw)[1]
        for ph, iy in T.grid(PH, gh):
            row[0] = terms(rois, k, 2, ph * gh + iy, gh)[0]
            row[1] = terms(rois, k, 2, ph * gh + iy, gh)[1]
            for pw, ix in T.grid(PW, gw):
                # Each value held once (bilinear.hold_macro: passed on, an expression would
                # be found again at every use).
                y, x = T.meta_var(place(rois, k, ph, pw, (row[0], row[1]),
                                        (columns[pw * gw + ix, 0], columns[pw * gw + ix, 1])))
                at[0] = y
                at[1] = x
                ys, xs = T.meta_var(point_corners(at[0], at[1], gh, gw, H, W, dt))
                hold(held, weight, 0, ys)
                hold(held, weight, 2, xs)
                y0, y1, wy0, wy1 = T.meta_var(corners_at(held, weight, 0))
                x0, x1, _, wx1 = T.meta_var(corners_at(held, weight, 2))
                n = T.meta_var(sample_index(PW, ph, pw, iy, ix, gh, gw))
                last_row = T.meta_var(tirx.all(y0 == y1, H > 1))
                last_col = T.meta_var(tirx.all(x0 == x1, W > 1))
                inside_x = T.meta_var(weight[2] > zero)  # the x low weight is 1 - a fraction below 1 inside
                itab[k, n] = T.Cast("int32", y0 - T.Select(last_row, W, T.int64(0))
                                    + x0 - T.Select(last_col, T.int64(1), T.int64(0)))
                ftab[k, SAMPLE_ENTRIES * n] = T.Select(inside_x, T.Select(last_row, zero, wy0), zero)
                ftab[k, SAMPLE_ENTRIES * n + 1] = T.Select(inside_x, T.Select(last_row, wy0, wy1), zero)
                ftab[k, SAMPLE_ENTRIES * n + 2] = T.Select(last_col, one, wx1)

    return fill


def align_tables(spec, start, extent, cells: bool = False) -> Geometry:
    """The separable per-box sample tables of RoIAlign, RoIWarp, PS-RoIAlign (common/sampling.py)
    and, with `cells`, of PrRoIPool (its pixel pairs, common/integral.py).

    `start(rois, k, col)` and `extent(rois, k, col)` give a box's first
    coordinate and size along x (col 1) or y (col 2) in feature-map units.
    Sample (iy, ix) of bin (ph, pw) reads row entry ph*gh + iy and column
    entry pw*gw + ix.  The y weights carry 1/count in avg mode, 1/area for cells.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    one = tirx.const(1.0, dt)
    zero = tirx.const(0.0, dt)
    avg = getattr(spec, "mode", "avg") == "avg"
    fill_axis = axis_table_macro(dt, cells)

    def weight(rois, k, gh, gw):
        if cells:  # the bin's mean: 1/area, and 0 for a bin of no area (mmcv's rule)
            area = extent(rois, k, 2) / tirx.const(PH, dt) * (extent(rois, k, 1) / tirx.const(PW, dt))
            return T.if_then_else(area > zero, one / T.max(area, tirx.const(1e-30, dt)), zero)
        # avg folds 1/count into the y weights; max compares raw samples.
        if not avg:
            return one
        return one / T.Cast(dt, T.max(gh * gw, tirx.const(1, "int64")))

    def grids(rois, k):
        if cells:
            return pair_grid(extent(rois, k, 2), PH, dt), pair_grid(extent(rois, k, 1), PW, dt)
        return (sample_grid(extent(rois, k, 2), PH, spec.sampling_ratio, dt),
                sample_grid(extent(rois, k, 1), PW, spec.sampling_ratio, dt))

    (K,) = dims("K", "int64")
    @T.prim_func
    def table_size(rois: T.Buffer((K, 5), dt), size: T.Buffer((1,), "int64")):
        size[0] = T.int64(1)
        for k in range(K):
            size[0] = T.max(size[0], 2 * (PH * grids(rois, k)[0] + PW * grids(rois, k)[1]))

    K, S = dims("K S", "int64")
    @T.prim_func
    def tables(rois: T.Buffer((K, 5), dt), itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt),
               H: T.int64, W: T.int64):
        # One box per task: y entries first (row offsets, weights carrying 1/count
        # in avg mode), then x entries; see common/sampling.py.
        for k in T.parallel(K):
            gh = T.meta_var(grids(rois, k)[0])
            gw = T.meta_var(grids(rois, k)[1])
            fill_axis(itab, ftab, k, 0, PH * gh, start(rois, k, 2), extent(rois, k, 2) / T.Cast(dt, PH),
                      gh, H, W, weight(rois, k, gh, gw))
            fill_axis(itab, ftab, k, 2 * PH * gh, PW * gw, start(rois, k, 1),
                      extent(rois, k, 1) / T.Cast(dt, PW), gw, W, 1, one)

    def corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W):
        return (corners_at(itab, ftab, k, 2 * (ph * gh + iy)),
                corners_at(itab, ftab, k, 2 * PH * gh + 2 * (pw * gw + ix)))

    return Geometry(grids, {"table_size": table_size, "tables": tables}, corners)


def align_family_kernels(spec, lanes: int, geometry: Geometry, fuse: bool = False,
                         shuffle: bool = False) -> dict[str, tirx.PrimFunc]:
    """The bilinear-sampling kernels over channel blocks, for any align-family `geometry`.

    `fuse`: forward reads the caller's map and backward writes the caller's
    gradient, each task converting its own (image, block) slab in a scratch
    buffer (see `_layout.block_macros`), so there are no pack/unpack passes.
    `shuffle`: the forward writes its output through block transposes
    (`_transpose.bin_tile`).
    """
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    P = PH * PW
    zero = tirx.const(0.0, dt)
    avg = getattr(spec, "mode", "avg") == "avg"
    BOX = spec.row_columns
    grids, table_kernels, sample_corners = geometry.grids, geometry.kernels, geometry.corners
    table_corners = sample_table_corners(spec) if geometry.per_sample else None
    assert avg or table_corners is None, "per-sample tables serve averaging ops (max mode reads one sample)"
    load, store = block_macros(spec.layout, dt, L)
    scatter = scatter_macro(rows_first=True)
    # A grid of more bins than a tile holds goes out in runs of whole rows of bins
    # (scratch per task stays at most MAX_TILE_BINS or one row, whatever output_size).
    chunked = P > MAX_TILE_BINS
    rows = max(1, MAX_TILE_BINS // PW) if chunked else PH
    tile_shape, put_bin, move_bins, _ = bin_tile(L, rows * PW if chunked else P, shuffle and not chunked)
    move_out = streamed(move_bins, L, dt, shuffle, True)
    move_arg_out = streamed(move_bins, L, "int32", shuffle, True)
    # The transposed run on its way to the streaming stores (_stream.streamed): only
    # whole-grid tiles with transposes use one (chunked grids keep their bounded scratch).
    stage_values = L * P if shuffle and not chunked else 1

    @T.macro
    def add_samples(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W, corners_of):
        for iy, ix in T.grid(gh, gw):
            ys, xs = T.meta_var(corners_of(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
            for ci in T.vectorized(L):
                # data[dn, dcb, 0, row*W + col] addresses pixel (row, col).
                v = T.meta_var(interpolate(lambda y, x: data[dn, dcb, 0, T.Cast("int64", y + x), ci], ys, xs))
                if avg:
                    acc[ci] = acc[ci] + v
                else:
                    # meta_var inlines `better`, so arg must update before acc.
                    better = T.meta_var(v > acc[ci] or (iy == 0 and ix == 0))
                    arg[ci] = T.Select(better, T.Cast("int32", iy * gw + ix), arg[ci])
                    acc[ci] = T.Select(better, v, acc[ci])

    @T.macro
    def bin_value(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W):
        # Bin (ph, pw) of box k: its channel vector in acc (and max mode's winners in arg).
        for ci in T.vectorized(L):
            acc[ci] = zero
            arg[ci] = -1
        if table_corners is None:
            add_samples(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W, sample_corners)
        elif keeps_samples(spec, gh, gw):
            add_samples(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W, table_corners)
        else:
            add_samples(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W, sample_corners)

    @T.macro
    def sample_boxes(data, dn, dcb, n, cb, rois, itab, ftab, flat_out, argmax, K, C, A, H, W):
        # Every box of image n, block cb of the channels, read from slab [dn, dcb] of `data`.
        tile = T.alloc_buffer(tile_shape, dt)
        atile = T.alloc_buffer(tile_shape, "int32")
        tr = T.alloc_buffer((2, L, L), dt)
        stage = T.alloc_buffer((stage_values,), dt)
        astage = T.alloc_buffer((stage_values if not avg else 1,), "int32")
        atr = T.alloc_buffer((2, L, L), "int32")
        acc = T.alloc_buffer((L,), dt)
        arg = T.alloc_buffer((L,), "int32")
        for k in range(K):
            if T.Cast("int64", rois[k, 0]) == n:
                gh = T.meta_var(grids(rois, k)[0])
                gw = T.meta_var(grids(rois, k)[1])
                if chunked:
                    for r0 in range((PH + rows - 1) // rows):
                        for r, pw in T.grid(T.min(rows, PH - r0 * rows), PW):
                            bin_value(data, dn, dcb, rois, k, r0 * rows + r, pw, gh, gw, itab, ftab, acc, arg, H, W)
                            for ci in range(L):
                                tile[ci, r * PW + pw] = acc[ci]
                                atile[ci, r * PW + pw] = arg[ci]
                        for ci, j in T.grid(T.min(L, C - cb * L), T.min(rows, PH - r0 * rows) * PW):
                            flat_out[(k * C + cb * L + ci) * P + r0 * rows * PW + j] = tile[ci, j]
                            if not avg:
                                if A > 0:
                                    argmax[(k * C + cb * L + ci) * P + r0 * rows * PW + j] = atile[ci, j]
                else:
                    for ph, pw in T.grid(PH, PW):
                        bin_value(data, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, acc, arg, H, W)
                        put_bin(tile, ph * PW + pw, acc)
                        if not avg:
                            put_bin(atile, ph * PW + pw, arg)
                    # The (box, block) run of the output is channel-major (_transpose.py).
                    move_out(tile, tr, stage, flat_out, k * C * P, cb, C, P, 0)
                    if not avg:
                        if A > 0:
                            move_arg_out(atile, atr, astage, argmax, k * C * P, cb, C, P, 0)

    @T.macro
    def scatter_samples(grad, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, gvec, H, W, corners_of):
        for iy, ix in T.grid(gh, gw):
            ys, xs = T.meta_var(corners_of(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
            for ci in T.vectorized(L):
                scatter(grad, lambda y, x: (dn, dcb, 0, T.Cast("int64", y + x), ci), ys, xs, gvec[ci])


    @T.macro
    def scatter_boxes(grad, dn, dcb, n, cb, grad_out, rois, itab, ftab, argmax, K, C, H, W):
        # Block cb of image n's gradient, accumulated in slab [dn, dcb] of `grad`.
        gtile = T.alloc_buffer((L, 1 if chunked else P), dt)
        gvec = T.alloc_buffer((L,), dt)
        for h, w in T.grid(H, W):
            for ci in T.vectorized(L):
                grad[dn, dcb, h, w, ci] = zero
        for k in range(K):
            if T.Cast("int64", rois[k, 0]) == n:
                gh = T.meta_var(grids(rois, k)[0])
                gw = T.meta_var(grids(rois, k)[1])
                if avg:
                    # The (box, block) gradient is one contiguous run of grad_out;
                    # copy it whole, then gather each bin's channel vector from L1.
                    # (Transposing L bins at a time from grad_out, as the forward
                    # does on its way out, measured 15 % slower here.)  A grid too
                    # large for a tile reads each bin's vector from grad_out itself.
                    if not chunked:
                        for ci in range(L):
                            for p in range(P):
                                gtile[ci, p] = T.if_then_else(
                                    cb * L + ci < C, grad_out[k, T.min(cb * L + ci, C - 1), p], zero)
                    for ph, pw in T.grid(PH, PW):
                        for ci in range(L):
                            if chunked:
                                gvec[ci] = T.if_then_else(
                                    cb * L + ci < C, grad_out[k, T.min(cb * L + ci, C - 1), ph * PW + pw], zero)
                            else:
                                gvec[ci] = gtile[ci, ph * PW + pw]
                        if table_corners is None:
                            scatter_samples(grad, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, gvec, H, W,
                                            sample_corners)
                        elif keeps_samples(spec, gh, gw):
                            scatter_samples(grad, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, gvec, H, W,
                                            table_corners)
                        else:
                            scatter_samples(grad, dn, dcb, rois, k, ph, pw, gh, gw, itab, ftab, gvec, H, W,
                                            sample_corners)
                else:
                    # Max: only the winning sample of each bin and channel gets the gradient.
                    for ci in range(T.min(L, C - cb * L)):
                        for ph, pw in T.grid(PH, PW):
                            s = argmax[(k * C + cb * L + ci) * P + ph * PW + pw]
                            if s >= 0 and T.Cast("int64", s) < gh * gw:  # a sample of this bin, whoever forged it
                                iy, ix = T.meta_var((T.Cast("int64", s) // gw, T.Cast("int64", s) % gw))
                                ys, xs = T.meta_var(sample_corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                                gv = grad_out[k, cb * L + ci, ph * PW + pw]
                                scatter(grad, lambda y, x: (dn, dcb, 0, T.Cast("int64", y + x), ci), ys, xs, gv)

    map_buffer_shape, blocks = task_map(spec.layout, L, fuse)

    N, Cb, H, W, K, C, A, S = dims("N Cb H W K C A S", "int64")  # Cb: unused when fused
    @T.prim_func
    def forward(data: T.Buffer(map_buffer_shape(N, Cb, C, H, W), dt), rois: T.Buffer((K, BOX), dt),
                itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt), out: T.Buffer((K, C, P), dt),
                argmax: T.Buffer((A,), "int32")):
        flat_out = T.decl_buffer((K * C * P,), dt, data=out.data)
        for task in T.parallel(N * blocks(Cb, C)):
            n, cb = unravel(task, (N, blocks(Cb, C)))
            with T.attr(0, IMPORT, HELPERS):
                if fuse:
                    slab = T.alloc_buffer((1, 1, H, W, L), dt)
                    load(data, slab, n, cb, 0, 0, C, H, W)
                    sample_boxes(slab, 0, 0, n, cb, rois, itab, ftab, flat_out, argmax, K, C, A, H, W)
                else:
                    sample_boxes(data, n, cb, n, cb, rois, itab, ftab, flat_out, argmax, K, C, A, H, W)
                stream_fence()

    N, Cb, H, W, K, C, A, S = dims("N Cb H W K C A S", "int64")  # Cb: unused when fused
    @T.prim_func
    def backward(grad_out: T.Buffer((K, C, P), dt), rois: T.Buffer((K, BOX), dt),
                 itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt), argmax: T.Buffer((A,), "int32"),
                 grad: T.Buffer(map_buffer_shape(N, Cb, C, H, W), dt)):
        for task in T.parallel(N * blocks(Cb, C)):
            n, cb = unravel(task, (N, blocks(Cb, C)))
            if fuse:
                slab = T.alloc_buffer((1, 1, H, W, L), dt)
                scatter_boxes(slab, 0, 0, n, cb, grad_out, rois, itab, ftab, argmax, K, C, H, W)
                store(slab, grad, n, cb, 0, 0, C, H, W)
            else:
                scatter_boxes(grad, n, cb, n, cb, grad_out, rois, itab, ftab, argmax, K, C, H, W)

    return {**table_kernels, "forward": forward, "backward": backward}
