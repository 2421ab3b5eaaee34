"""RoIWarp on GPUs: the align family's kernels (`_align.py`) in snapped boxes."""

from __future__ import annotations

from ._align import roi_warp_kernels


def kernels(spec, schedule) -> dict:
    return roi_warp_kernels(spec, schedule)
