"""RoI-SPP on the CPU: the pool family's kernels (`_pool.py`) with a pyramid of grids."""

from __future__ import annotations

from . import by_direction
from ._pool import roi_spp_kernels

# Keywords the compute takes besides `lanes`, per direction (see `_pool.pool_family_kernels`).
OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def kernels(spec, schedule) -> dict:
    return by_direction(spec, schedule, roi_spp_kernels)
