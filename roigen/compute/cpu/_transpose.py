"""L x L block transposes in vector registers, for moving between channel vectors and bin runs.

The channel-block kernels compute one vector of L channels per bin, but the
output keeps each channel's bins contiguous (torchvision's NCHW).  Writing a
vector out lane by lane costs L scalar stores per bin; transposing L bins at
a time with two-source shuffles (log2 L stages of L shuffles, `vpermt2ps` on
AVX-512) turns them into L vector stores: c4_head's forward takes 44 ms
against 47-49 ms lane by lane, at 16 lanes.  (The backward's grad_out, read
the same way, was 15 % slower transposed, so it gathers from a copy in L1
instead: _align.py.)

`block_transpose(L)` returns a macro `transpose(tr)` that transposes `tr[1]`
of a (2, L, L) scratch buffer (any dtype); the result is in
`tr[result_slot(L)]`.  L must be a power of two (every schedule's lanes are).
"""

from __future__ import annotations

from tvm.script import tirx as T

# Bins of one box a channel-block kernel keeps in its output tile (scratch per
# task: lanes x this many values); larger grids go out in runs of rows.
MAX_TILE_BINS = 1 << 12


def tile_plan(bins: int, widths: list[int]) -> tuple[bool, int, list[int]]:
    """How a pyramid of `bins` bins, whose levels are `widths` bins wide, fits the tile:
    (chunked, bins the tile holds, rows of each level per chunk).  Chunked pyramids go
    out level by level in runs of whole rows (scratch: lanes x max(MAX_TILE_BINS, widest row))."""
    chunked = bins > MAX_TILE_BINS
    tile_bins = max([MAX_TILE_BINS, *widths]) if chunked else bins
    return chunked, tile_bins, [max(1, tile_bins // w) for w in widths]


def max_tiles(dt: str, lanes: int, tile_bins: int):
    """`alloc_tile()` -> (values, argmaxes) per lane for `tile_bins` bins, a task's tile;
    `alloc_bin()` -> one bin's (values, argmaxes) vectors; and the macro
    `stash(tile, atile, slot, acc, arg)` that puts a bin's vectors at `slot` of the tile."""

    def alloc_tile():
        return T.alloc_buffer((lanes, tile_bins), dt), T.alloc_buffer((lanes, tile_bins), "int32")

    def alloc_bin():
        return T.alloc_buffer((lanes,), dt), T.alloc_buffer((lanes,), "int32")

    @T.macro
    def stash(tile, atile, slot, acc, arg):
        for ci in range(lanes):
            tile[ci, slot] = acc[ci]
            atile[ci, slot] = arg[ci]

    return alloc_tile, alloc_bin, stash


def _stages(lanes: int) -> list[tuple[int, list[int], list[int]]]:
    """(b, lo, hi) per stage: rows i and i+b (bit b of i clear) exchange their b-blocks.

    Over the 2L lanes of (row i, row i+b): row i keeps its lanes with bit b clear
    and takes row i+b's matching ones; row i+b gets the rest.  After the stages
    for b = L/2, ..., 1, row j holds column j.
    """
    out, b = [], lanes // 2
    while b >= 1:
        lo = [j if j & b == 0 else lanes + j - b for j in range(lanes)]
        hi = [j + b if j & b == 0 else lanes + j for j in range(lanes)]
        out.append((b, lo, hi))
        b //= 2
    return out


def result_slot(lanes: int) -> int:
    """Which half of the scratch buffer holds the transpose: stage s writes slot s % 2."""
    return (len(_stages(lanes)) - 1) % 2 if lanes > 1 else 1


def block_transpose(lanes: int):
    L = lanes
    stages = _stages(L)
    if L & (L - 1):
        raise ValueError(f"lanes={L}: block transposes need a power of two")

    @T.macro
    def stage(tr, src, dst, b, lo, hi):
        for q in T.unroll(L // 2):
            i = T.meta_var((q // b) * 2 * b + q % b)
            tr[dst, i, T.Ramp(0, 1, L)] = T.Shuffle([tr[src, i, T.Ramp(0, 1, L)], tr[src, i + b, T.Ramp(0, 1, L)]], lo)
            tr[dst, i + b, T.Ramp(0, 1, L)] = T.Shuffle(
                [tr[src, i, T.Ramp(0, 1, L)], tr[src, i + b, T.Ramp(0, 1, L)]], hi)

    def from_stage(k: int):
        # Stage k reads slot (k + 1) % 2 and writes slot k % 2.  The stages are
        # chained here, in Python: shuffle indices must be constants.
        if k == len(stages):
            @T.macro
            def done(tr):
                T.evaluate(0)

            return done
        rest = from_stage(k + 1)
        b, lo, hi = stages[k]
        src, dst = (k + 1) % 2, k % 2

        @T.macro
        def step(tr):
            stage(tr, src, dst, b, lo, hi)
            rest(tr)

        return step

    return from_stage(0)


def bin_tile(lanes: int, bins: int, shuffle: bool):
    """(shape, put, move, at): a tile of `bins` bins of one box and channel block, macros
    to fill it and to empty a run of it into the channel-major output, and its reader.

    put(tile, p, acc) stores bin p's channel vector `acc`; at(tile, p, ci) is its lane ci;
    move(tile, tr, dst, base, cb, C, P, first) writes tile bins first .. first+P-1
    of channel cb*L + j, j < C - cb*L, to dst[base + (cb*L + j)*P + p] (a grid of P
    bins starting at `base` of a flat tensor; a pyramid moves one level at a time).

    `shuffle`: the tile is bin-major (a vector store per bin) and full blocks
    leave L bins at a time through block transposes in `tr`, a (2, L, L)
    scratch of the tile's dtype.  Otherwise the tile is channel-major (L scalar
    stores per bin) and leaves as a plain copy.  Which is faster depends on L
    and the output size (at 32 lanes the 32-wide shuffles lost), so it is a
    schedule knob.
    """
    L = lanes
    shuffle = shuffle and L > 1
    slot = result_slot(L)
    transpose = block_transpose(L) if shuffle else None

    @T.macro
    def put(tile, p, acc):
        if shuffle:
            for ci in T.vectorized(L):
                tile[p, ci] = acc[ci]
        else:
            for ci in range(L):
                tile[ci, p] = acc[ci]

    @T.macro
    def move(tile, tr, dst, base, cb, C, P, first):
        if shuffle:
            if (cb + 1) * L <= C:
                for chunk in range(P // L):
                    for i in T.unroll(L):
                        tr[1, i, T.Ramp(0, 1, L)] = tile[first + chunk * L + i, T.Ramp(0, 1, L)]
                    transpose(tr)
                    for j in T.unroll(L):
                        dst[T.Ramp(base + (cb * L + j) * P + chunk * L, T.int64(1), L)] = tr[slot, j, T.Ramp(0, 1, L)]
                for ci, p in T.grid(L, P % L):
                    dst[base + (cb * L + ci) * P + P - P % L + p] = tile[first + P - P % L + p, ci]
            else:
                for ci, p in T.grid(C - cb * L, P):
                    dst[base + (cb * L + ci) * P + p] = tile[first + p, ci]
        else:
            for ci, p in T.grid(T.min(L, C - cb * L), P):
                dst[base + (cb * L + ci) * P + p] = tile[ci, first + p]

    def at(tile, p, ci):
        return tile[p, ci] if shuffle else tile[ci, p]

    return ((bins, L) if shuffle else (L, bins)), put, move, at


def lane_sums(lanes: int):
    """A macro `sums(rows, first, tr)` putting in `tr[result_slot(L), 0]` the L sums over the
    lanes of rows[first], ..., rows[first + L - 1] (a buffer of L-lane rows): lane j holds
    row first + j's.

    The transpose's stages with the two halves of each exchange added rather than kept:
    L - 1 pairs of shuffles and an add, where transposing and then adding the L rows takes
    L * log2(L) shuffles and L - 1 adds (45 vector ops against 79 at 16 lanes)."""
    L = lanes
    stages = _stages(L)
    if L & (L - 1) or L < 2:
        raise ValueError(f"lanes={L}: lane sums need a power of two of at least 2")
    whole = T.Ramp(0, 1, L)

    def from_stage(k: int):
        if k == len(stages):
            @T.macro
            def done(rows, first, tr):
                T.evaluate(0)

            return done
        rest = from_stage(k + 1)
        b, lo, hi = stages[k]
        src, dst = (k + 1) % 2, k % 2

        if k == 0:  # the first stage reads the rows themselves
            @T.macro
            def step(rows, first, tr):
                for i in T.unroll(b):
                    tr[dst, i, whole] = (T.Shuffle([rows[first + i, whole], rows[first + i + b, whole]], lo)
                                         + T.Shuffle([rows[first + i, whole], rows[first + i + b, whole]], hi))
                rest(rows, first, tr)
        else:
            @T.macro
            def step(rows, first, tr):
                for i in T.unroll(b):
                    tr[dst, i, whole] = (T.Shuffle([tr[src, i, whole], tr[src, i + b, whole]], lo)
                                         + T.Shuffle([tr[src, i, whole], tr[src, i + b, whole]], hi))
                rest(rows, first, tr)

        return step

    return from_stage(0)
