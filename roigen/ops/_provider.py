"""Where the ops get their kernels: roigen picks a target and builds (or loads from the cache).

A package made by `roigen generate` carries a copy of the ops with its own
version of this module, which looks kernels up in the package instead.
"""

from __future__ import annotations

import torch

from ..target import Target, cuda_name, resolve, runnable_here


def select_target(name: str, device: torch.device) -> Target:
    """The target that runs an op on tensors of `device`; clear errors where none can."""
    if device.type == "cuda":
        target = resolve(cuda_name(torch.cuda.get_device_capability(device)) if name == "auto" else name)
        if target.runtime != "cuda":
            raise ValueError(f"target {name!r} does not run CUDA tensors; move the input to the CPU "
                             "or pass a CUDA target")
        return target
    if device.type != "cpu":
        raise ValueError(f"input is on {device}: roigen runs CPU tensors (CPU or Vulkan targets) "
                         "and CUDA tensors")
    target = resolve("host" if name == "auto" else name)
    if target.runtime == "cuda":
        raise ValueError(f"target {name!r} runs CUDA tensors, but input is on the CPU")
    if target.runtime == "llvm" and not runnable_here(target):
        raise ValueError(f"target {name!r} is for another machine; build its kernels with "
                         "`roigen generate` and run them there")
    return target


def kernels(spec, target: Target):
    from ..build import build

    return build(spec, target)
