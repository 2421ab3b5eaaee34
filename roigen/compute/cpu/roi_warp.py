"""RoIWarp on the CPU: the align family's kernels (`_align.py`) in boxes snapped to the grid."""

from __future__ import annotations

from . import by_direction
from ._align import roi_warp_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_align.align_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def kernels(spec, schedule) -> dict:
    return by_direction(spec, schedule, roi_warp_kernels)
