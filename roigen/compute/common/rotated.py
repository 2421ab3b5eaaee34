"""Rotated boxes (roi_align_rotated): where a sample of a box (batch, cx, cy, w, h, angle) falls.

detectron2's ROIAlignRotated, in its order of floating-point operations: the
centre is scaled and shifted by half a pixel when aligned (the sizes are only
scaled, and clamped to 1 when not aligned); sample (iy, ix) of bin (ph, pw)
sits at (yy, xx) in the box's frame, yy = -h/2 + ph*bin_h + (iy + 0.5)*bin_h/gh,
and on the map at y = yy*cos(t) - xx*sin(t) + cy, x = yy*sin(t) + xx*cos(t) + cx,
t the angle in radians counter-clockwise (mmcv's `clockwise` negates it).
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from .sampling import sample_fraction, sample_grid, sample_pos


class RotatedBoxes:
    """A spec's rotated-box rule as TIR expressions of `rois[k, :]`."""

    def __init__(self, spec):
        self.dt = dt = spec.compute_dtype
        self.spec = spec
        self.scale = tirx.const(spec.spatial_scale, dt)
        self.offset = tirx.const(0.5 if spec.aligned else 0.0, dt)
        radians = math.pi / 180.0 if spec.angle_unit == "deg" else 1.0
        self.factor = tirx.const(-radians if spec.clockwise else radians, dt)

    def centre(self, rois, k, col):
        """cx' (col 1) or cy' (col 2)."""
        return rois[k, col] * self.scale - self.offset

    def extent(self, rois, k, col):
        """w' (col 1) or h' (col 2)."""
        size = rois[k, col + 2] * self.scale
        return size if self.spec.aligned else T.max(size, tirx.const(1.0, self.dt))

    def angle(self, rois, k):
        return rois[k, 5] * self.factor

    def grid(self, rois, k, col, pooled, itype="int64"):
        """Samples per bin along x (col 1) or y (col 2), as roi_align's."""
        return sample_grid(self.extent(rois, k, col), pooled, self.spec.sampling_ratio, self.dt, itype)

    def offset_in_box(self, rois, k, col, pooled, grid, s):
        """Sample s's coordinate along the box's own x (col 1) or y (col 2) axis: yy or xx."""
        size = self.extent(rois, k, col)
        half = tirx.const(0.5, self.dt)
        return sample_pos(-size * half, size / tirx.const(pooled, self.dt), grid, s, self.dt)

    @staticmethod
    def onto_map(yy, xx, cos, sin, cy, cx):
        """(y, x) on the map of the box-frame point (yy, xx)."""
        return yy * cos - xx * sin + cy, yy * sin + xx * cos + cx


def rotated_sample_gradient(spec, itype="int64"):
    """`sample(rois, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, y slopes, x slopes, u, v) for
    the box gradient (GPUs' per-box kernel; the CPU's sums are in cpu/roi_align_rotated.py): the
    sample's corners, the slopes of their weights, and per coordinate (cx', cy', w', h', t) how its sum moves with the
    sample's x and y gradients gx, gy: acc[j] += gx*u[j] + gy*v[j].

    A sample sits at y = yy*cos(t) - xx*sin(t) + cy', x = yy*sin(t) + xx*cos(t) + cx',
    with yy = h'*(a_y - 1/2), a_y = (ph + (iy + 0.5)/gh)/PH, and xx alike, so
    d/dcx' = gx, d/dcy' = gy, d/dw' = (a_x - 1/2)*(gx*cos - gy*sin),
    d/dh' = (a_y - 1/2)*(gy*cos + gx*sin), d/dt = gy*(-yy*sin - xx*cos) + gx*(yy*cos - xx*sin).
    A size clamped to 1 (not aligned) has no gradient.  The counts gh, gw are held constant.
    """
    from .sample_gradient import axis_slope
    from .sampling import axis_corners

    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    half = tirx.const(0.5, dt)

    def moving(rois, k, col):
        """1 where the box's size along col follows the box (0 where clamped to 1)."""
        if spec.aligned:
            return one
        return T.if_then_else(rois[k, col + 2] * box.scale < one, zero, one)

    def sample(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        t = box.angle(rois, k)
        cos, sin = T.cos(t), T.sin(t)
        yy = box.offset_in_box(rois, k, 2, PH, gh, ph * gh + iy)
        xx = box.offset_in_box(rois, k, 1, PW, gw, pw * gw + ix)
        y, x = box.onto_map(yy, xx, cos, sin, box.centre(rois, k, 2), box.centre(rois, k, 1))
        ax = (sample_fraction(pw, ix, gw, PW, dt) - half) * moving(rois, k, 1)
        ay = (sample_fraction(ph, iy, gh, PH, dt) - half) * moving(rois, k, 2)
        u = [one, zero, ax * cos, ay * sin, yy * cos - xx * sin]
        v = [zero, one, -ax * sin, ay * cos, -yy * sin - xx * cos]
        return (axis_corners(y, H, dt, itype), axis_corners(x, W, dt, itype), axis_slope(y, H, dt, itype),
                axis_slope(x, W, dt, itype), u, v)

    return sample


def rotated_box_gradient_macro(spec, itype="int64"):
    """A macro adding one bin's share of d(loss)/d(cx', cy', w', h', t) to `acc` (5 values),
    over channels [c0, c1) (gpu/_box_gradient.py's signature; `value` and `argmax` unused),
    as `rotated_sample_gradient` says."""
    from .bilinear import held_with_slopes, hold_with_slopes_macro, interpolate

    dt = spec.compute_dtype
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    sample = rotated_sample_gradient(spec, itype)
    hold = hold_with_slopes_macro()

    @T.macro
    def accumulate(read, rois, k, ph, pw, gh, gw, H, W, c0, c1, value, argmax, grad, sums, acc):
        # Each sample's corners, weights and slopes in registers (bilinear.hold_macro).
        at = T.alloc_buffer((8,), itype, scope="local")
        weight = T.alloc_buffer((8,), dt, scope="local")
        for iy, ix in T.grid(gh, gw):
            ys_, xs_, sy_, sx_, u, v = T.meta_var(sample(rois, k, ph, pw, iy, ix, gh, gw, H, W))
            hold(at, weight, ys_, xs_, sy_, sx_)
            ys, xs, sy, sx = T.meta_var(held_with_slopes(at, weight))
            sums[0] = zero
            sums[1] = zero
            for c in range(c0, c1):
                sums[0] = sums[0] + grad(c) * interpolate(lambda yv, xv: read(c, yv, xv), ys, sx)
                sums[1] = sums[1] + grad(c) * interpolate(lambda yv, xv: read(c, yv, xv), sy, xs)
            inv = T.meta_var(one / T.Cast(dt, T.max(gh * gw, 1)))
            acc[0] = acc[0] + (sums[0] * u[0] + sums[1] * v[0]) * inv
            acc[1] = acc[1] + (sums[0] * u[1] + sums[1] * v[1]) * inv
            acc[2] = acc[2] + (sums[0] * u[2] + sums[1] * v[2]) * inv
            acc[3] = acc[3] + (sums[0] * u[3] + sums[1] * v[3]) * inv
            acc[4] = acc[4] + (sums[0] * u[4] + sums[1] * v[4]) * inv

    return accumulate


def box_gradient_scales(spec):
    """A function of the box column j (0 after the batch index) giving what the box gradient's
    sums (d/d the scaled coordinates) are multiplied by: spatial_scale, and for a rotated
    box's angle (j = 4), the angle's unit."""
    scale = tirx.const(spec.spatial_scale, spec.compute_dtype)
    if spec.box_columns == 6:
        factor = RotatedBoxes(spec).factor
        return lambda j: tirx.Select(j < 4, scale, factor)
    return lambda j: scale
