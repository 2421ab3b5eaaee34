"""What the GPU kernels share around their math: the launch, thread registers and the kernel set."""

from __future__ import annotations

from tvm.script import tirx as T


def registers(*dtypes) -> tuple:
    """One thread-local scalar per dtype (one-element local buffers), in order."""
    return tuple(T.alloc_buffer((1,), dtype, scope="local") for dtype in dtypes)


def kernel_set(sched, forward, backward, backward_atomic) -> dict:
    """The kernels a schedule runs: `backward_atomic` only where it allows atomics (CUDA)."""
    kernels = {"forward": forward, "backward": backward}
    if sched.atomics:
        kernels["backward_atomic"] = backward_atomic
    return kernels


def launch(blocks, threads) -> tuple:
    """(blk, t): the rest of the kernel runs on `blocks` blocks of `threads` threads."""
    return T.launch_thread("blockIdx.x", blocks), T.launch_thread("threadIdx.x", threads)
