"""PS-RoIAlign on GPUs: the align family's kernels (`_align.py`), position-sensitive."""

from __future__ import annotations

from ._align import ps_roi_align_kernels


def kernels(spec, schedule) -> dict:
    return ps_roi_align_kernels(spec, schedule)
