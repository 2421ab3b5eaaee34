"""Tensors placed against PROT_NONE guard pages: a read or write one element outside them faults.

`guarded(shape, dtype, side)` maps the tensor's pages between two inaccessible
pages (mmap + mprotect), flush against the one after it (side="after") or the
one before it (side="before"), and wraps the memory with `torch.from_numpy`.
A kernel that touches memory past either end kills the process with SIGSEGV,
so tests that use these run in a subprocess.
"""

from __future__ import annotations

import ctypes
import math
import mmap

import numpy as np
import torch

PAGE = mmap.PAGESIZE
_PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.int32: np.int32}
_mappings = []  # a mapping must outlive every tensor that views it


def _protect(address: int, length: int) -> None:
    if _libc.mprotect(address, length, _PROT_NONE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")


def guarded(shape, dtype=torch.float32, side: str = "after", fill=None) -> torch.Tensor:
    """A contiguous tensor of `shape` whose first (side="before") or last (side="after")
    byte touches an inaccessible page; filled with `fill` (a tensor) or zeros."""
    numel = math.prod(shape)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    nbytes = numel * itemsize
    body = max(1, -(-nbytes // PAGE)) * PAGE
    buf = mmap.mmap(-1, body + 2 * PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    _protect(address, PAGE)
    _protect(address + PAGE + body, PAGE)
    _mappings.append(buf)
    offset = PAGE + (body - nbytes if side == "after" else 0)
    array = np.frombuffer(buf, dtype=_NUMPY[dtype], count=numel, offset=offset).reshape(shape)
    tensor = torch.from_numpy(array)
    if fill is not None:
        tensor.copy_(fill)
    return tensor
