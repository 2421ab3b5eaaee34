"""Each op's math as thread-parallel TIR for GPUs (CUDA, and Vulkan through WGSL).

Kernel contract (shared by every GPU kernel; see `roigen.gpu_runtime`):
- `x` / `grad_input`: the feature map NHWC, (N, H, W, C) in the compute
  dtype.  Channels innermost, so the threads of a warp, which take
  consecutive channels, read consecutive addresses (coalesced).
- `rois`: (K, 5) rows (batch, x1, y1, x2, y2), batch indices already checked.
- `out` / `grad`: the op's `kernel_output_shape`, as on the CPU.
- `aux`: flat int32, one value per output element or empty (see each op);
  its encoding is private to a target's forward/backward pair.
- Indices are int32 throughout: WGSL has no 64-bit integers, and the runtime
  refuses tensors of 2**31 elements or more.

Kernels: `forward`; `backward`, deterministic (each thread owns a slice of
`grad_input`, no atomics: Vulkan, and CUDA under deterministic mode); and,
when the schedule allows atomics (CUDA), `backward_atomic`, which scatters
with atomic adds.  `grad_input` arrives zeroed.
"""

from ...specs import PSRoIAlignSpec, PSRoIPoolSpec, RoIAlignSpec, RoIPoolSpec, RoISPPSpec, RoIWarpSpec, SPPSpec
from .align import ps_roi_align_kernels, roi_align_kernels, roi_warp_kernels
from .pool import ps_roi_pool_kernels, roi_pool_kernels, roi_spp_kernels
from .spp import spp_kernels

GPU_KERNELS = {
    RoIAlignSpec: roi_align_kernels,
    RoIWarpSpec: roi_warp_kernels,
    PSRoIAlignSpec: ps_roi_align_kernels,
    RoIPoolSpec: roi_pool_kernels,
    RoISPPSpec: roi_spp_kernels,
    PSRoIPoolSpec: ps_roi_pool_kernels,
    SPPSpec: spp_kernels,
}

__all__ = ["GPU_KERNELS"]
