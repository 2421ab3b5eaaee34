"""Each op's math as TIR, keyed by its spec class.

A compute function takes (spec, lanes) and returns named PrimFuncs that follow
the kernel contract in `roi_align.py` (ops on channel blocks) or `ps_roi.py`
(ops on plain NCHW, `spec.packed` False).  It knows no target: the schedule
(`roigen.schedules`) chooses `lanes`, the channel-block width, and for the
ops in FUSES_LAYOUT whether the layout conversion runs inside their tasks.
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

# Ops whose compute takes `fuse=True`: kernels that convert the caller's layout
# inside their own tasks (no pack/unpack kernels; see roi_align.py).
FUSES_LAYOUT = frozenset({RoIAlignSpec, RoIWarpSpec})

__all__ = ["FUSES_LAYOUT", "KERNELS", "layout_kernels"]
