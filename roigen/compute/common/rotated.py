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

from .sampling import sample_grid, sample_pos


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
