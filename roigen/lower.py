"""Spec + target + schedule → one IRModule holding every kernel the op needs."""

from __future__ import annotations

import tvm

from .compute import KERNELS, layout_kernels
from .compute.gpu import GPU_KERNELS


def kernel_funcs(spec, target, sched) -> dict:
    """The op's PrimFuncs for the target's family, by kernel name."""
    table = GPU_KERNELS if target.family == "gpu" else KERNELS
    try:
        compute = table[type(spec)]
    except KeyError:
        raise ValueError(f"no {target.family} compute registered for {type(spec).__name__}") from None
    if target.family == "gpu":
        return compute(spec, sched)
    funcs = compute(spec, sched.lanes)
    if spec.packed:
        funcs.update(layout_kernels(spec.layout, spec.compute_dtype, sched.lanes))
    return funcs


def as_module(funcs: dict) -> tvm.IRModule:
    """One IRModule of named kernels, each exported under its name."""
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
