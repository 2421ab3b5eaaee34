"""Each op's math as thread-parallel TIR for GPUs (CUDA, and Vulkan through WGSL).

Kernel contract (shared by every GPU kernel; see `roigen.backends.gpu_kernels`):
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

`roigen/compute/gpu/<op>.py` holds an op's `kernels(spec, schedule)`, as
the CPU tree does; files starting with `_` hold what several ops share.
"""
