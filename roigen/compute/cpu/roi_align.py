"""RoIAlign on the CPU: the align family's kernels (`_align.py`) with RoIAlign's box rule,
and `backward_boxes`, the gradient with respect to the boxes.

`backward_boxes` reads the map in channel blocks packed by `box_pack`
(_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx

from ..common.sample_gradient import sample_geometry
from ..common.sampling import box_grids
from . import _box_gradient, by_direction
from ._align import roi_align_kernels
from ._layout import layout_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_align.align_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def packed_box_gradient_kernel(spec, lanes: int) -> tirx.PrimFunc:
    """`backward_boxes` on the packed map (_box_gradient.py), avg or max mode."""
    geometry = sample_geometry(spec)
    zero = tirx.const(0.0, spec.compute_dtype)

    def sample(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        ys, xs, sy, sx, (dy1, dy2), (dx1, dx2) = geometry(rois, k, ph, pw, iy, ix, gh, gw, H, W)
        # x1 and x2 move with the sample's x, y1 and y2 with its y.
        return ys, xs, sy, sx, [dx1, zero, dx2, zero], [zero, dy1, zero, dy2]

    return _box_gradient.packed_sample_box_gradient_kernel(spec, lanes, box_grids(spec), sample)


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, roi_align_kernels),
            "box_pack": layout_kernels(spec.layout, spec.compute_dtype, lanes)["pack"],
            "backward_boxes": packed_box_gradient_kernel(spec, lanes)}
