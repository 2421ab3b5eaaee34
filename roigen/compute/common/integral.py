"""Precise RoI Pooling's exact integrals: a bin's pixels and their hat-function weights, per axis.

The bilinear surface through the pixels (0 outside the map) is a sum of hat
functions, f(y, x) = sum F[i, j] hat(y - i) hat(x - j), so a bin's integral is
separable: along each axis, the bin [a, a + size] overlaps unit cells
[i, i + 1], i from floor(a), at most ceil(size) + 1 of them, and over its
overlap [u, v] a cell gives its low pixel i the weight
integral_u^v (1 - (t - i)) dt and its high pixel i + 1 integral_u^v (t - i) dt.
An entry of either form below is read exactly like a bilinear sample
(common/bilinear.py): two corners and two weights per axis.

- Cells (`cell_grid`, `cell_corners`; the GPU kernels): one cell per entry, c entries
  per axis for a bin's c cells.
- Pixel pairs (`pair_grid`, `pair_corners`; the CPU's tables): neighbouring cells share a
  pixel, so the c cells weigh c + 1 pixels, each with the sum of its two cells' weights,
  two pixels to an entry, (c + 2) // 2 entries per axis.  Cells read 2.5 times the
  corners on fpn_box's boxes, and the CPU's channel blocks read each entry 16 times.  A
  GPU thread reads its own entries once; there the pair form only grew the kernels (GPU
  code inlines every use of an expression: PrRoIPool's CUDA source went from 2.5 to
  4.4 MB, and its compile from 24 to 49 s).

Pixels outside the map get weight 0 (the surface is 0 there; no clamping, no edge
rule), with an index inside it.
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


def pair_grid(extent, pooled: int, dt, itype="int64"):
    """Pixel pairs a bin of `extent / pooled` may weigh: (ceil(bin) + 3) // 2 (its
    ceil(bin) + 1 cells' pixels, two to an entry), never < 1; NaN and inf to about
    MAX_GRID (a grid the runtime refuses), as sample_grid."""
    per_bin = T.min(extent / tirx.const(pooled, dt), tirx.const(2 * MAX_GRID - 3, dt))
    cells = T.Cast(itype, T.ceil(T.max(per_bin, tirx.const(0.0, dt)))) + tirx.const(1, itype)
    return (cells + tirx.const(2, itype)) // tirx.const(2, itype)


def _bin(start, bin_size, grid, s, limit, dt):
    """Bin s // grid's ends (a, b) and its first cell, clamped before it becomes an index:
    a bin far off the map still overlaps only cells whose pixels are off the map (zero
    weight), whatever its start."""
    a = start + T.Cast(dt, s // grid) * bin_size
    return a, a + bin_size, T.floor(clamp(a, -2, T.Cast(dt, limit + 1), dt))


def _cell(a, b, i, dt):
    """Cell [i, i + 1]'s weights of its (low, high) pixels over the bin [a, b]."""
    zero = tirx.const(0.0, dt)
    u = T.max(a, i) - i
    v = T.min(b, i + tirx.const(1.0, dt)) - i
    overlap = v > u
    high = T.if_then_else(overlap, tirx.const(0.5, dt) * (v * v - u * u), zero)
    return T.if_then_else(overlap, (v - u) - high, zero), high


def _pixels(low, w_low, w_high, limit, dt, itype):
    """(low, high, w_low, w_high) of pixels low and low + 1, a weight of 0 off the map."""
    zero = tirx.const(0.0, dt)
    last = T.Cast(dt, limit - 1)

    def pixel(q, weight):
        inside = tirx.all(q >= zero, q <= last)
        return T.Cast(itype, clamp(q, zero, last, dt)), T.if_then_else(inside, weight, zero)

    (i0, w0), (i1, w1) = pixel(low, w_low), pixel(low + tirx.const(1.0, dt), w_high)
    return i0, i1, w0, w1


def cell_corners(start, bin_size, grid, s, limit, dt, itype="int64"):
    """(low, high, w_low, w_high) of cell s % grid of bin s // grid along an axis of `limit` pixels."""
    a, b, first = _bin(start, bin_size, grid, s, limit, dt)
    i = first + T.Cast(dt, s % grid)
    return _pixels(i, *_cell(a, b, i, dt), limit, dt, itype)


def pair_corners(start, bin_size, grid, s, limit, dt, itype="int64"):
    """(low, high, w_low, w_high) of pixel pair s % grid of bin s // grid along an axis of
    `limit` pixels: pixels p and p + 1, p = the bin's first cell + 2 * (s % grid), each
    weighted by the two cells it belongs to."""
    one = tirx.const(1.0, dt)
    a, b, first = _bin(start, bin_size, grid, s, limit, dt)
    p = first + T.Cast(dt, 2 * (s % grid))
    before, at, after = _cell(a, b, p - one, dt), _cell(a, b, p, dt), _cell(a, b, p + one, dt)
    return _pixels(p, at[0] + before[1], after[0] + at[1], limit, dt, itype)


def point_corners(pos, limit, dt, itype="int64"):
    """(low, high, w_low, w_high) of the surface's hat weights at one point along an axis:
    pixels floor(pos) and floor(pos) + 1, weight 0 for a pixel off the map."""
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    i = T.floor(clamp(pos, -2, T.Cast(dt, limit + 1), dt))
    frac = T.if_then_else(tirx.all(pos >= i, pos <= i + one), pos - i, zero)
    return _pixels(i, one - frac, frac, limit, dt, itype)


def box_gradient_macro(spec, itype="int64"):
    """A macro adding one bin's share of d(loss)/d(x1', y1', x2', y2') to `acc` (4 values):
    ROI_OPS.md's PrRoIPool box gradient, exactly as mmcv's kernel forms it.

    For the bin's edges bx1 < bx2, by1 < by2, out its value and g its output
    gradient: d out/d bx1 = (bh*out - L(bx1)) / A with L(x) the exact integral of the
    surface along the bin's column at x (its y cells times the hat weights at x),
    d out/d bx2 = (L(bx2) - bh*out) / A, y alike; chained to the box's corners through
    bx1 = x1' + pw*w/PW, bx2 = x1' + (pw+1)*w/PW.  The signature is gpu/_box_gradient.py's
    (channels [c0, c1) of the bin; `argmax` unused).  The caller skips bins of no area.
    """
    from .bilinear import corners_at, hold_macro
    from .sampling import box_rule

    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    start, extent = box_rule(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    hold = hold_macro()

    def at(read, ys, xs):
        y0, y1, wy0, wy1 = ys
        x0, x1, wx0, wx1 = xs
        return wy0 * (wx0 * read(y0, x0) + wx1 * read(y0, x1)) + wy1 * (wx0 * read(y1, x0) + wx1 * read(y1, x1))

    @T.macro
    def accumulate(read, rois, k, ph, pw, gh, gw, H, W, c0, c1, value, argmax, grad, sums, acc):
        # Everything is linear in the channels' gradients, so the channel loops sit innermost
        # and sum g-weighted values: sums = (sum g*out, sum g*L(bx1), sum g*L(bx2), sum g*L(by1),
        # sum g*L(by2)); the bin's geometry is found once, not once per channel.
        bw = extent(rois, k, 1) / tirx.const(PW, dt)
        bh = extent(rois, k, 2) / tirx.const(PH, dt)
        bx1 = start(rois, k, 1) + T.Cast(dt, pw) * bw
        by1 = start(rois, k, 2) + T.Cast(dt, ph) * bh
        for j in range(5):
            sums[j] = zero
        for c in range(c0, c1):
            sums[0] = sums[0] + grad(c) * value(c)
        # The edges' corners, and each cell's, in registers (bilinear.hold_macro).
        held = T.alloc_buffer((6,), itype, scope="local")
        weight = T.alloc_buffer((6,), dt, scope="local")
        hold(held, weight, 2, point_corners(bx1, W, dt, itype))
        hold(held, weight, 4, point_corners(bx1 + bw, W, dt, itype))
        left, right = T.meta_var((corners_at(held, weight, 2), corners_at(held, weight, 4)))
        for iy in range(gh):
            hold(held, weight, 0, cell_corners(start(rois, k, 2), bh, gh, ph * gh + iy, H, dt, itype))
            ys = T.meta_var(corners_at(held, weight, 0))
            for c in range(c0, c1):
                sums[1] = sums[1] + grad(c) * at(lambda y, x: read(c, y, x), ys, left)
                sums[2] = sums[2] + grad(c) * at(lambda y, x: read(c, y, x), ys, right)
        hold(held, weight, 2, point_corners(by1, H, dt, itype))
        hold(held, weight, 4, point_corners(by1 + bh, H, dt, itype))
        top, bottom = T.meta_var((corners_at(held, weight, 2), corners_at(held, weight, 4)))
        for ix in range(gw):
            hold(held, weight, 0, cell_corners(start(rois, k, 1), bw, gw, pw * gw + ix, W, dt, itype))
            xs = T.meta_var(corners_at(held, weight, 0))
            for c in range(c0, c1):
                sums[3] = sums[3] + grad(c) * at(lambda y, x: read(c, y, x), top, xs)
                sums[4] = sums[4] + grad(c) * at(lambda y, x: read(c, y, x), bottom, xs)
        area = bw * bh
        d_x1 = T.meta_var((bh * sums[0] - sums[1]) / area)
        d_x2 = T.meta_var((sums[2] - bh * sums[0]) / area)
        d_y1 = T.meta_var((bw * sums[0] - sums[3]) / area)
        d_y2 = T.meta_var((sums[4] - bw * sums[0]) / area)
        a0 = T.meta_var(T.Cast(dt, pw) / tirx.const(PW, dt))
        a1 = T.meta_var(T.Cast(dt, pw + 1) / tirx.const(PW, dt))
        b0 = T.meta_var(T.Cast(dt, ph) / tirx.const(PH, dt))
        b1 = T.meta_var(T.Cast(dt, ph + 1) / tirx.const(PH, dt))
        acc[0] = acc[0] + (d_x1 * (one - a0) + d_x2 * (one - a1))
        acc[1] = acc[1] + (d_y1 * (one - b0) + d_y2 * (one - b1))
        acc[2] = acc[2] + (d_x1 * a0 + d_x2 * a1)
        acc[3] = acc[3] + (d_y1 * b0 + d_y2 * b1)

    return accumulate


def has_area(spec, rois, k):
    """Whether box k's bins have an area (PrRoIPool's rule: else output and gradients are 0)."""
    from .sampling import box_rule

    _, extent = box_rule(spec)
    zero = tirx.const(0.0, spec.compute_dtype)
    return tirx.all(extent(rois, k, 1) > zero, extent(rois, k, 2) > zero)
