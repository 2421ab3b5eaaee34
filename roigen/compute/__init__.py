"""Each op's math as TIR, keyed by its spec class.

A compute function takes (spec, lanes) and returns named PrimFuncs that follow
the kernel contract in `roi_align.py`.  It knows no target: the schedule
(`roigen.schedules`) chooses `lanes`, the channel-block width.
"""

from ..specs import RoIAlignSpec, RoIPoolSpec
from .layout import layout_kernels
from .roi_align import roi_align_kernels
from .roi_pool import roi_pool_kernels

KERNELS = {
    RoIAlignSpec: roi_align_kernels,
    RoIPoolSpec: roi_pool_kernels,
}

__all__ = ["KERNELS", "layout_kernels"]
