"""Precise RoI Pooling's exact integrals: a bin's cells and their hat-function weights, per axis.

The bilinear surface through the pixels (0 outside the map) is a sum of hat
functions, f(y, x) = sum F[i, j] hat(y - i) hat(x - j), so a bin's integral is
separable: along each axis, the bin [a, a + size] overlaps unit cells
[i, i + 1], i from floor(a), at most ceil(size) + 1 of them, and over its
overlap [u, v] a cell gives its low pixel i the weight
integral_u^v (1 - (t - i)) dt and its high pixel i + 1 integral_u^v (t - i) dt.
A cell is then read exactly like a bilinear sample (common/bilinear.py): two
corners and two weights per axis.  Pixels outside the map get weight 0 (the
surface is 0 there; no clamping, no edge rule), with an index inside it.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .sampling import MAX_GRID, clamp


def cell_grid(extent, pooled: int, dt, itype="int64"):
    """Cells a bin of `extent / pooled` may overlap: ceil(bin) + 1, never < 1, NaN and inf
    to MAX_GRID (a grid the runtime refuses), as sample_grid."""
    per_bin = T.min(extent / tirx.const(pooled, dt), tirx.const(MAX_GRID - 1, dt))
    return T.Cast(itype, T.ceil(T.max(per_bin, tirx.const(0.0, dt)))) + tirx.const(1, itype)


def cell_corners(start, bin_size, grid, s, limit, dt, itype="int64"):
    """(low, high, w_low, w_high) of cell s % grid of bin s // grid along an axis of `limit` pixels."""
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    half = tirx.const(0.5, dt)
    a = start + T.Cast(dt, s // grid) * bin_size
    b = a + bin_size
    # The first cell, clamped before it becomes an index: a bin far off the map still
    # overlaps only cells whose pixels are off the map (zero weight), whatever its start.
    first = T.floor(clamp(a, -2, T.Cast(dt, limit + 1), dt))
    i = first + T.Cast(dt, s % grid)
    u = T.max(a, i) - i
    v = T.min(b, i + one) - i
    overlap = v > u
    high_w = T.if_then_else(overlap, half * (v * v - u * u), zero)
    low_w = T.if_then_else(overlap, (v - u) - high_w, zero)
    last = T.Cast(dt, limit - 1)

    def pixel(p, weight):
        inside = tirx.all(p >= zero, p <= last)
        return T.Cast(itype, clamp(p, zero, last, dt)), T.if_then_else(inside, weight, zero)

    low, w_low = pixel(i, low_w)
    high, w_high = pixel(i + one, high_w)
    return low, high, w_low, w_high
