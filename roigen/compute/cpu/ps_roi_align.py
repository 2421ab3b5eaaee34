"""PS-RoIAlign on the CPU (`_ps_roi.py`): plain NCHW, no channel blocks, so no knobs."""

from __future__ import annotations

from ._ps_roi import ps_roi_align_kernels


def kernels(spec, schedule) -> dict:
    return ps_roi_align_kernels(spec)
