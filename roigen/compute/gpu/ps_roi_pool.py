"""PS-RoIPool on GPUs (`_pool.py`): the average of each bin of a snapped box."""

from __future__ import annotations

from ._pool import ps_roi_pool_kernels


def kernels(spec, schedule) -> dict:
    return ps_roi_pool_kernels(spec, schedule)
