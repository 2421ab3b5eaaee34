"""Each op's math as TIR for CPUs: channel-block kernels run by TVM's thread pool.

`roigen/compute/cpu/<op>.py` holds an op's `kernels(spec, schedule)` and, if
its compute takes options besides the block width, `OPTIONS` (per direction,
the keywords the CPU schedule may tune).  Files starting with `_` hold what
several ops share.  The kernel contract is in `_align.py` (ops on channel
blocks) and `_ps_roi.py` (ops on plain NCHW, `spec.packed` False).
"""

from __future__ import annotations

from ._layout import LAYOUT_PASS, layout_kernels

# The kernels each direction's build contributes.
_DIRECTION_KERNELS = {"forward": ("table_size", "tables", "forward"), "backward": ("backward",)}


def by_direction(spec, schedule, build) -> dict:
    """A channel-block op's kernels: each direction's built by `build(spec, **keywords)` with
    that direction's keywords (`schedule.compute_kwargs`), plus its layout pass if any."""
    funcs = {}
    for direction, names in _DIRECTION_KERNELS.items():
        keywords = schedule.compute_kwargs(direction)
        built = build(spec, **keywords)
        funcs.update({name: built[name] for name in names if name in built})
        layout = schedule.layout_pass(direction)
        if layout:
            funcs[layout] = layout_kernels(spec.layout, spec.compute_dtype, keywords["lanes"])[layout]
    return funcs


__all__ = ["LAYOUT_PASS", "by_direction"]
