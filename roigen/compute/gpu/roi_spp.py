"""RoI-SPP on GPUs: the pool family's kernels (`_pool.py`) with a pyramid of grids."""

from __future__ import annotations

from ._pool import roi_spp_kernels


def kernels(spec, schedule) -> dict:
    return roi_spp_kernels(spec, schedule)
