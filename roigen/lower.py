"""Spec + schedule → one IRModule holding every kernel the op needs."""

from __future__ import annotations

import tvm

from .compute import KERNELS, layout_kernels


def lower(spec, sched) -> tvm.IRModule:
    try:
        compute = KERNELS[type(spec)]
    except KeyError:
        raise ValueError(f"no compute registered for {type(spec).__name__}") from None
    funcs = compute(spec, sched.lanes)
    if spec.packed:
        funcs.update(layout_kernels(spec.layout, spec.compute_dtype, sched.lanes))
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
