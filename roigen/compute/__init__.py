"""Each op's math as TIR, keyed by its spec class.

A compute function takes (spec, lanes) and returns named PrimFuncs that follow
the kernel contract in `roi_align.py` (ops on channel blocks) or `ps_roi.py`
(ops on plain NCHW, `spec.packed` False).  It knows no target: the schedule
(`roigen.schedules`) chooses `lanes`, the channel-block width, and the
values of the options in OPTIONS.
"""

from ..specs import PSRoIAlignSpec, PSRoIPoolSpec, RoIAlignSpec, RoIPoolSpec, RoISPPSpec, RoIWarpSpec, SPPSpec
from .layout import layout_kernels
from .ps_roi import ps_roi_align_kernels, ps_roi_pool_kernels
from .roi_align import roi_align_kernels, roi_warp_kernels
from .roi_pool import roi_pool_kernels, roi_spp_kernels
from .spp import spp_kernels

KERNELS = {
    RoIAlignSpec: roi_align_kernels,
    RoIWarpSpec: roi_warp_kernels,
    RoIPoolSpec: roi_pool_kernels,
    RoISPPSpec: roi_spp_kernels,
    SPPSpec: spp_kernels,
    PSRoIAlignSpec: ps_roi_align_kernels,
    PSRoIPoolSpec: ps_roi_pool_kernels,
}

# The keyword options a compute takes besides lanes, per kernel direction:
# `fuse`, kernels that convert the caller's layout inside their own tasks (no
# pack/unpack kernels); `shuffle`, output written through block transposes
# (transpose.py).  See roi_align.py.
OPTIONS = {
    RoIAlignSpec: {"forward": ("fuse", "shuffle"), "backward": ("fuse",)},
    RoIWarpSpec: {"forward": ("fuse", "shuffle"), "backward": ("fuse",)},
}

__all__ = ["KERNELS", "OPTIONS", "layout_kernels"]
