"""RoIAlign on the CPU: the align family's kernels (`_align.py`) with RoIAlign's box rule,
and `box_slopes`/`backward_boxes`, the gradient with respect to the boxes, in the same
(image, channel block) tasks (_align_box_gradient.py).
"""

from __future__ import annotations

from . import by_direction
from ._align import roi_align_kernels
from ._align_box_gradient import align_box_gradient_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_align.align_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, roi_align_kernels), **align_box_gradient_kernels(spec, lanes)}
