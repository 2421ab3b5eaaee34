"""RoIAlign on GPUs: the align family's kernels (`_align.py`)."""

from __future__ import annotations

from ._align import roi_align_kernels


def kernels(spec, schedule) -> dict:
    return roi_align_kernels(spec, schedule)
