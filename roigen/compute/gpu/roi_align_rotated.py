"""RoIAlign in rotated boxes on GPUs: `_sampled.py`'s kernels, each thread placing its
samples in the rotated box (common/rotated.py), and `backward_boxes` (one block per box,
_box_gradient.py)."""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.rotated import RotatedBoxes, rotated_box_gradient_macro
from ..common.sampling import axis_corners
from . import _box_gradient
from ._sampled import I32, sampled_kernels


def kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)

    def grids(rois, k):
        return box.grid(rois, k, 2, PH, I32), box.grid(rois, k, 1, PW, I32)

    def sample(rois, k, b, gh, gw, iy, ix, H, W):
        yy = box.offset_in_box(rois, k, 2, PH, gh, b // PW * gh + iy)
        xx = box.offset_in_box(rois, k, 1, PW, gw, b % PW * gw + ix)
        t = box.angle(rois, k)
        y, x = box.onto_map(yy, xx, T.cos(t), T.sin(t), box.centre(rois, k, 2), box.centre(rois, k, 1))
        inv = tirx.const(1.0, dt) / T.Cast(dt, T.max(gh * gw, tirx.const(1, I32)))
        y0, y1, wy0, wy1 = axis_corners(y, H, dt, I32)
        return (y0, y1, wy0 * inv, wy1 * inv), axis_corners(x, W, dt, I32)

    box_gradient = _box_gradient.box_gradient_kernel(spec, sched, grids, rotated_box_gradient_macro(spec, I32))
    return {**sampled_kernels(spec, sched, grids, sample), "backward_boxes": box_gradient}
