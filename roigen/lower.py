"""Spec + target + schedule → one IRModule holding every kernel the op needs."""

from __future__ import annotations

import tvm

from .compute import kernel_funcs as _compute_kernels


def kernel_funcs(spec, target, sched) -> dict:
    """The op's PrimFuncs for the target's schedule family, by kernel name."""
    return _compute_kernels(spec, target.family, sched)


def as_module(funcs: dict) -> tvm.IRModule:
    """One IRModule of named kernels, each exported under its name."""
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
