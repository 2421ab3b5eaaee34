"""Deformable RoI pooling (deform_roi_pool): where a sample of a shifted bin falls.

mmcv's DeformRoIPool: aligned RoIAlign (half-pixel offset, no minimum size), each bin
(ph, pw) shifted by gamma*roi_w*offset_x and gamma*roi_h*offset_y, the offsets read from
the box's row after its corners (specs.DeformRoIPoolSpec).  A sample of bin (ph, pw) sits at
x = (x1' + shift_x) + (pw*bin_w + (ix + 0.5)*bin_w/gw) (y alike); mmcv adds the same terms left to
right, which rounds differently in the last place only.
"""

from __future__ import annotations

from tvm import tirx

from .sample_gradient import axis_slope
from .sampling import axis_corners, box_rule, sample_fraction, sample_grid, sample_pos


class DeformBoxes:
    """A spec's deformable-box rule as TIR expressions of `rois[k, :]`; `col` is 1 for x, 2 for y."""

    def __init__(self, spec):
        self.spec = spec
        self.dt = spec.compute_dtype
        self.start, self.extent = box_rule(spec)
        self.gamma = tirx.const(spec.gamma, self.dt)
        self.PH, self.PW = spec.pooled_size

    def pooled(self, col) -> int:
        return self.PW if col == 1 else self.PH

    def grid(self, rois, k, col, itype="int64"):
        """Samples per bin along x (col 1) or y (col 2), as roi_align's."""
        return sample_grid(self.extent(rois, k, col), self.pooled(col), self.spec.sampling_ratio, self.dt, itype)

    def offset(self, rois, k, col, ph, pw):
        """Bin (ph, pw)'s offset along x (col 1) or y (col 2), as the caller gave it."""
        first = self.spec.box_columns + (0 if col == 1 else self.PH * self.PW)
        return rois[k, first + ph * self.PW + pw]

    def bin_start(self, rois, k, col, ph, pw):
        """Where bin (ph, pw)'s first sample interval starts before its own index: x1' + shift."""
        return self.start(rois, k, col) + self.gamma * self.extent(rois, k, col) * self.offset(rois, k, col, ph, pw)

    def base(self, rois, k, col, s, grid):
        """Sample s along x (col 1) or y (col 2) (bin s // grid, sub-sample s % grid), less the
        bin's start: what the CPU's tables hold."""
        size = self.extent(rois, k, col) / tirx.const(self.pooled(col), self.dt)
        return sample_pos(tirx.const(0.0, self.dt), size, grid, s, self.dt)

    def position(self, rois, k, col, ph, pw, sub, grid):
        """Sample `sub` of bin (ph, pw) along x (col 1) or y (col 2): the bin's start plus `base`,
        added in the same order on every target (so that CPU and GPU place it alike)."""
        index = pw if col == 1 else ph
        return self.bin_start(rois, k, col, ph, pw) + self.base(rois, k, col, index * grid + sub, grid)


def deform_sample_gradient(spec, itype="int64"):
    """`sample(rois, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, y slopes, x slopes, u, v) for
    the box gradient (GPUs' per-box kernel; the CPU's sums are in cpu/deform_roi_pool.py) over the
    box's corners (x1', y1', x2', y2'), and `bin_scales(rois, k)` -> (d x/d offset_x,
    d y/d offset_y) of every sample of a bin.

    x = x1' + (a + gamma*o)*(x2' - x1'), a = (pw + (ix + 0.5)/gw)/PW, o the bin's x offset, so
    d x/d x1' = 1 - a - gamma*o, d x/d x2' = a + gamma*o, d x/d o = gamma*(x2' - x1'); y alike.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    box = DeformBoxes(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)

    def sample(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        y = box.position(rois, k, 2, ph, pw, iy, gh)
        x = box.position(rois, k, 1, ph, pw, ix, gw)
        ax = sample_fraction(pw, ix, gw, PW, dt) + box.gamma * box.offset(rois, k, 1, ph, pw)
        ay = sample_fraction(ph, iy, gh, PH, dt) + box.gamma * box.offset(rois, k, 2, ph, pw)
        return (axis_corners(y, H, dt, itype), axis_corners(x, W, dt, itype), axis_slope(y, H, dt, itype),
                axis_slope(x, W, dt, itype), [one - ax, zero, ax, zero], [zero, one - ay, zero, ay])

    def bin_scales(rois, k):
        return box.gamma * box.extent(rois, k, 1), box.gamma * box.extent(rois, k, 2)

    return sample, bin_scales
