"""RoIAlign on the CPU: the align family's kernels (`_align.py`) with RoIAlign's box rule."""

from __future__ import annotations

from . import by_direction
from ._align import roi_align_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_align.align_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def kernels(spec, schedule) -> dict:
    return by_direction(spec, schedule, roi_align_kernels)
