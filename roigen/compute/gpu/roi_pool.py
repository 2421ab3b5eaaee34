"""RoIPool on GPUs: the pool family's kernels (`_pool.py`) with one grid."""

from __future__ import annotations

from ._pool import roi_pool_kernels


def kernels(spec, schedule) -> dict:
    return roi_pool_kernels(spec, schedule)
