"""RoIAlign's gradient with respect to its box: ROI_OPS.md's "roi_align box gradient".

A sample of bin (ph, pw) sits at y = y1' + a*roi_h, a = (ph + (iy + 0.5)/gh)/PH
(x alike), so d y/d y1' = 1 - a and d y/d y2' = a; where the not-aligned clamp
roi_h = 1 is active, d y/d y1' = 1 and d y/d y2' = 0.  The sample counts are held
constant (adaptive counts are piecewise constant).  A sample's slope along an axis
is its bilinear read with the axis' weights replaced by (-1, +1): F[high] - F[low]
inside the map, 0 where the read is 0 (outside [-1, limit]), where the coordinate is
clamped to 0, and at or past the last pixel (the edge value); at an integer
coordinate, the slope from the right.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .bilinear import interpolate
from .sampling import axis_corners, box_rule, sample_fraction, sample_pos


def moves(pos, limit, dt):
    """Whether a sample at `pos` on an axis of `limit` pixels moves its bilinear weights
    (their slopes are -1 and +1 there, 0 elsewhere: see the module's docstring)."""
    return tirx.all(pos > tirx.const(0.0, dt), pos < T.Cast(dt, limit - 1))


def slope_flag(pos, limit, dt):
    """`moves` as a number: 1 where the sample moves its weights, else 0."""
    return T.if_then_else(moves(pos, limit, dt), tirx.const(1.0, dt), tirx.const(0.0, dt))


def axis_slope(pos, limit, dt, itype="int64"):
    """(low, high, d w_low/d pos, d w_high/d pos) of one sample coordinate: the corners of
    `axis_corners` and the derivative of their weights."""
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    low, high, _, _ = axis_corners(pos, limit, dt, itype)
    moving = moves(pos, limit, dt)
    return low, high, T.if_then_else(moving, -one, zero), T.if_then_else(moving, one, zero)


def sample_geometry(spec, itype="int64"):
    """`geometry(rois, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, y slopes, x slopes,
    (d/dy1', d/dy2'), (d/dx1', d/dx2')) of sample (iy, ix) of bin (ph, pw): its corners and
    weights along each axis, the slopes of those weights, and how the sample moves with the
    box's corners."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    start, extent = box_rule(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    clamps = not spec.aligned  # roi_w = max(x2' - x1', 1)

    def share(a, clamped):
        """(d/d low corner, d/d high corner) of a sample at fraction `a` of its box."""
        if not clamps:
            return one - a, a
        return T.if_then_else(clamped, one, one - a), T.if_then_else(clamped, zero, a)

    def geometry(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        bh = extent(rois, k, 2) / tirx.const(PH, dt)
        bw = extent(rois, k, 1) / tirx.const(PW, dt)
        y = sample_pos(start(rois, k, 2), bh, gh, ph * gh + iy, dt)
        x = sample_pos(start(rois, k, 1), bw, gw, pw * gw + ix, dt)
        return (axis_corners(y, H, dt, itype), axis_corners(x, W, dt, itype), axis_slope(y, H, dt, itype),
                axis_slope(x, W, dt, itype),
                share(sample_fraction(ph, iy, gh, PH, dt), start(rois, k, 4) - start(rois, k, 2) < one),
                share(sample_fraction(pw, ix, gw, PW, dt), start(rois, k, 3) - start(rois, k, 1) < one))

    return geometry


def align_box_gradient_macro(spec, itype="int64"):
    """A macro adding one bin's share of d(loss)/d(x1', y1', x2', y2') to `acc` (4 values),
    in feature-map units (the caller multiplies by spatial_scale).

    The signature is gpu/_box_gradient.py's, over channels [c0, c1) of the bin:
    `argmax(c)` is a channel's winning sample in max mode (iy*gw + ix; any other value,
    and that channel adds nothing), unused in avg mode, where every sample gets g / count;
    `value` is unused.
    """
    dt = spec.compute_dtype
    avg = spec.mode == "avg"
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    geometry = sample_geometry(spec, itype)

    @T.macro
    def add(sums, dy, dx, acc):
        # sums: (sum g * dv/dx, sum g * dv/dy) over the channels, for one sample.
        acc[0] = acc[0] + sums[0] * dx[0]
        acc[1] = acc[1] + sums[1] * dy[0]
        acc[2] = acc[2] + sums[0] * dx[1]
        acc[3] = acc[3] + sums[1] * dy[1]

    @T.macro
    def accumulate(read, rois, k, ph, pw, gh, gw, H, W, c0, c1, value, argmax, grad, sums, acc):
        if avg:
            # Every sample of the bin, each channel's gradient / count: the channel loop sits
            # innermost and sums g-weighted slopes, so a sample's geometry is found once.
            for iy, ix in T.grid(gh, gw):
                ys, xs, sy, sx, dy, dx = T.meta_var(geometry(rois, k, ph, pw, iy, ix, gh, gw, H, W))
                sums[0] = zero
                sums[1] = zero
                for c in range(c0, c1):
                    sums[0] = sums[0] + grad(c) * interpolate(lambda y, x: read(c, y, x), ys, sx)
                    sums[1] = sums[1] + grad(c) * interpolate(lambda y, x: read(c, y, x), sy, xs)
                inv = T.meta_var(one / T.Cast(dt, T.max(gh * gw, 1)))
                sums[0] = sums[0] * inv
                sums[1] = sums[1] * inv
                add(sums, dy, dx, acc)
        else:
            # Each channel's winning sample only, and only a sample of this bin, whoever forged
            # the argmax.
            for c in range(c0, c1):
                s = T.meta_var(T.Cast(itype, argmax(c)))
                if argmax(c) >= 0 and s < gh * gw:
                    ys, xs, sy, sx, dy, dx = T.meta_var(geometry(rois, k, ph, pw, s // gw, s % gw, gh, gw, H, W))
                    sums[0] = grad(c) * interpolate(lambda y, x: read(c, y, x), ys, sx)
                    sums[1] = grad(c) * interpolate(lambda y, x: read(c, y, x), sy, xs)
                    add(sums, dy, dx, acc)

    return accumulate
