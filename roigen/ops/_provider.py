"""Where the ops get their kernels: roigen picks a target and builds (or loads from the cache).

A package made by `roigen generate` carries a copy of the ops with its own
version of this module, which looks kernels up in the package instead.
"""

from __future__ import annotations

import torch

from ..backends import BACKENDS, backend_for
from ..target import Target, cuda_name, resolve


def select_target(name: str, device: torch.device) -> Target:
    """The target that runs an op on tensors of `device`; clear errors where none can."""
    if device.type not in {b.device_type for b in BACKENDS.values()}:
        raise ValueError(f"input is on {device}: roigen runs CPU tensors (CPU or Vulkan targets) "
                         "and CUDA tensors")
    if name == "auto":
        target = resolve(cuda_name(torch.cuda.get_device_capability(device)) if device.type == "cuda" else "host")
    else:
        target = resolve(name)
    backend = backend_for(target)
    if backend.device_type != device.type:
        wanted = backend.device_type.upper()
        raise ValueError(f"target {name!r} runs {wanted} tensors, but input is on {device}; "
                         f"move the input to the {wanted} or pass another target")
    if not backend.runnable(target):
        raise ValueError(f"target {name!r} is for another machine; build its kernels with "
                         "`roigen generate` and run them there")
    return target


def kernels(spec, target: Target):
    from ..build import build

    return build(spec, target)
