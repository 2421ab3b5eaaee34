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
from .sampling import axis_corners, box_rule, sample_pos


def axis_slope(pos, limit, dt, itype="int64"):
    """(low, high, d w_low/d pos, d w_high/d pos) of one sample coordinate: the corners of
    `axis_corners` and the derivative of their weights."""
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    low, high, _, _ = axis_corners(pos, limit, dt, itype)
    moving = tirx.all(pos > zero, pos < T.Cast(dt, limit - 1))
    return low, high, T.if_then_else(moving, -one, zero), T.if_then_else(moving, one, zero)


def align_box_gradient_macro(spec, itype="int64"):
    """A macro adding one bin's share of d(loss)/d(x1', y1', x2', y2') to `acc` (4 values),
    in feature-map units (the caller multiplies by spatial_scale).

    The signature is cpu/_box_gradient.py's: `read(y, x)` loads pixel (y, x) of the bin's
    channel; `g` is the bin's output gradient; `s` its winning sample in max mode
    (iy*gw + ix; any other value, and the bin gets nothing), unused in avg mode, where
    every sample gets g / count; `value` and `scratch` are unused.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    start, extent = box_rule(spec)
    avg = spec.mode == "avg"
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    half = tirx.const(0.5, dt)
    clamps = not spec.aligned  # roi_w = max(x2' - x1', 1)

    def fraction(bin_index, sub, grid, pooled):
        return (T.Cast(dt, bin_index) + (T.Cast(dt, sub) + half) / T.Cast(dt, grid)) / tirx.const(pooled, dt)

    def share(a, clamped):
        """(d/d low corner, d/d high corner) of a sample at fraction `a` of its box."""
        if not clamps:
            return one - a, a
        return T.if_then_else(clamped, one, one - a), T.if_then_else(clamped, zero, a)

    @T.macro
    def one_sample(read, rois, k, ph, pw, iy, ix, gh, gw, H, W, g, acc):
        bh = extent(rois, k, 2) / tirx.const(PH, dt)
        bw = extent(rois, k, 1) / tirx.const(PW, dt)
        y = sample_pos(start(rois, k, 2), bh, gh, ph * gh + iy, dt)
        x = sample_pos(start(rois, k, 1), bw, gw, pw * gw + ix, dt)
        ys = T.meta_var(axis_corners(y, H, dt, itype))
        xs = T.meta_var(axis_corners(x, W, dt, itype))
        dv_dy = interpolate(read, axis_slope(y, H, dt, itype), xs)
        dv_dx = interpolate(read, ys, axis_slope(x, W, dt, itype))
        dy1, dy2 = T.meta_var(share(fraction(ph, iy, gh, PH), start(rois, k, 4) - start(rois, k, 2) < one))
        dx1, dx2 = T.meta_var(share(fraction(pw, ix, gw, PW), start(rois, k, 3) - start(rois, k, 1) < one))
        acc[0] = acc[0] + g * dv_dx * dx1
        acc[1] = acc[1] + g * dv_dy * dy1
        acc[2] = acc[2] + g * dv_dx * dx2
        acc[3] = acc[3] + g * dv_dy * dy2

    @T.macro
    def accumulate(read, rois, k, ph, pw, gh, gw, H, W, value, s, g, scratch, acc):
        if avg:
            for iy, ix in T.grid(gh, gw):
                one_sample(read, rois, k, ph, pw, iy, ix, gh, gw, H, W, g / T.Cast(dt, T.max(gh * gw, 1)), acc)
        # The bin's winning sample only, and only a sample of this bin, whoever forged the argmax.
        elif s >= 0 and T.Cast(itype, s) < gh * gw:
            one_sample(read, rois, k, ph, pw, T.Cast(itype, s) // gw, T.Cast(itype, s) % gw, gh, gw, H, W, g, acc)

    return accumulate
