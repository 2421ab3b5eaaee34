"""One bilinear sample: the read of its four corners, and its twin, the scatter of a gradient.

A sample's corners along an axis are `(low, high, w_low, w_high)` (see
`sampling.axis_corners`); where the kernels keep them (sample tables, shared
or local buffers) and how a corner pair becomes an address differ by kernel,
so both helpers take the corners as values and an address function.  The
order of floating-point operations is ROI_OPS.md's (and torchvision's):
wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11) forward, and
wy * wx * g per corner backward, except the CPU's backward, (g * wy) * wx
(`scatter_macro`'s rows_first).
"""

from __future__ import annotations

from tvm.script import tirx as T


def corners_at(ibuf, fbuf, *index):
    """The corners stored at `index` and the entry after it along the last axis (`ibuf`
    the indices, `fbuf` the weights): the layout every sample table here uses."""
    *lead, last = index
    return ibuf[(*lead, last)], ibuf[(*lead, last + 1)], fbuf[(*lead, last)], fbuf[(*lead, last + 1)]


def hold_macro():
    """A macro storing one axis' corners `(low, high, w_low, w_high)` at `ibuf[i], ibuf[i + 1]`
    and `fbuf[i], fbuf[i + 1]` (thread registers), to be read back with `corners_at`.

    GPU code generation writes an expression out in full at every use, and TVM's
    common-subexpression pass leaves expressions that read memory alone: a sample's corners,
    used in two reads each and found from the box's row, made the sampled kernels' CUDA
    source megabytes long (nvcc's time grows with it).  Held once, each is a register."""

    @T.macro
    def hold(ibuf, fbuf, i, corners):
        ibuf[i] = corners[0]
        ibuf[i + 1] = corners[1]
        fbuf[i] = corners[2]
        fbuf[i + 1] = corners[3]

    return hold


def hold_with_slopes_macro():
    """A macro `hold(ibuf, fbuf, ys, xs, sy, sx)` holding a sample's corners along y and x
    and its slope corners (common/sample_gradient.py) in 8-entry registers (`hold_macro`),
    read back with `held_with_slopes`."""
    hold_axis = hold_macro()

    @T.macro
    def hold(ibuf, fbuf, ys, xs, sy, sx):
        hold_axis(ibuf, fbuf, 0, ys)
        hold_axis(ibuf, fbuf, 2, xs)
        hold_axis(ibuf, fbuf, 4, sy)
        hold_axis(ibuf, fbuf, 6, sx)

    return hold


def held_with_slopes(ibuf, fbuf) -> list:
    """(ys, xs, sy, sx) as `hold_with_slopes_macro` holds them."""
    return [corners_at(ibuf, fbuf, i) for i in (0, 2, 4, 6)]


def interpolate(read, ys, xs, onto=None):
    """The sample's value; `read(y, x)` loads the pixel at corner indices y, x.  With
    `onto` (a running sum), the sum plus the value, adding one row of corners at a time."""
    y0, y1, wy0, wy1 = ys
    x0, x1, wx0, wx1 = xs
    top = wy0 * (wx0 * read(y0, x0) + wx1 * read(y0, x1))
    bottom = wy1 * (wx0 * read(y1, x0) + wx1 * read(y1, x1))
    return top + bottom if onto is None else onto + top + bottom


def scatter_macro(atomic: bool = False, rows_first: bool = False):
    """A macro adding `g` times each corner's weight into `buf` at `address(y, x)`
    (an index tuple): plain adds, or CUDA atomic adds where blocks share pixels.

    `rows_first` (the CPU's channel vectors, g a vector): g times each row's weight first,
    then times the column's, (g * wy) * wx, not (wy * wx) * g.  A product of two weights is
    a scalar that each corner broadcasts to a vector (a vector instruction of its own on
    AVX-512); a weight read from a table broadcasts as it is loaded."""

    def weight(wy, wx, g):
        return g * wy * wx if rows_first else wy * wx * g

    @T.macro
    def scatter(buf, address, ys, xs, g):
        if atomic:
            T.evaluate(T.cuda.atomic_add(T.address_of(buf[*address(ys[0], xs[0])]), weight(ys[2], xs[2], g)))
            T.evaluate(T.cuda.atomic_add(T.address_of(buf[*address(ys[0], xs[1])]), weight(ys[2], xs[3], g)))
            T.evaluate(T.cuda.atomic_add(T.address_of(buf[*address(ys[1], xs[0])]), weight(ys[3], xs[2], g)))
            T.evaluate(T.cuda.atomic_add(T.address_of(buf[*address(ys[1], xs[1])]), weight(ys[3], xs[3], g)))
        else:
            buf[*address(ys[0], xs[0])] += weight(ys[2], xs[2], g)
            buf[*address(ys[0], xs[1])] += weight(ys[2], xs[3], g)
            buf[*address(ys[1], xs[0])] += weight(ys[3], xs[2], g)
            buf[*address(ys[1], xs[1])] += weight(ys[3], xs[3], g)

    return scatter
