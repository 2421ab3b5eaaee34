"""What every backend's kernels share: torch tensors handed to TVM, dtypes, layouts.

Tensors cross into TVM through DLPack with no copy: the packed functions take
the torch tensors themselves.  The kernels themselves are in `roigen.backends`.
"""

from __future__ import annotations

import torch

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def to_tvm(x: torch.Tensor):
    """A TVM view of a torch tensor's memory (DLPack; no copy)."""
    import tvm_ffi

    return tvm_ffi.from_dlpack(x)


def channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D map is laid out NHWC (and not also plainly contiguous)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
