"""One module per runtime: how kernels for it are compiled, stored, packaged and loaded.

A target file's `runtime` names one of these backends (`llvm`, `cuda`,
`wgpu`); nothing else in roigen branches on a runtime's name.  A new runtime
is one module here, holding one `Backend` (see `base.py` for the interface),
plus a target file that names it.

Every backend's kernels take the same calls (`forward`, `backward`), so the
ops, the tuner and the benchmarks use them without knowing which runtime
runs them.
"""

from __future__ import annotations

from . import cuda, llvm, wgpu
from .base import Backend, Compiled

BACKENDS: dict[str, Backend] = {b.name: b for b in (llvm.BACKEND, cuda.BACKEND, wgpu.BACKEND)}


def backend_for(target) -> Backend:
    """The backend of `target`'s runtime."""
    try:
        return BACKENDS[target.runtime]
    except KeyError:
        raise ValueError(f"target {target.name!r} names the runtime {target.runtime!r}, which has no backend; "
                         f"backends: {sorted(BACKENDS)}") from None


def device_name(kind: str) -> str:
    """The device a tuning record is kept for, by the target's `device_key` kind."""
    for backend in BACKENDS.values():
        if backend.device_kind == kind:
            return backend.device_name()
    kinds = ", ".join(b.device_kind for b in BACKENDS.values())
    raise ValueError(f"unknown device_key {kind!r} ({kinds})")


__all__ = ["BACKENDS", "Backend", "Compiled", "backend_for", "device_name"]
