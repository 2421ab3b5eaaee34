"""Spec + target + schedule → one IRModule holding every kernel the op needs."""

from __future__ import annotations

import tvm

from .compute import KERNELS, OPTIONS, layout_kernels
from .runtime import LAYOUT_PASS
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
    return {**_cpu_kernels(spec, compute, sched, "forward", ("table_size", "tables", "forward")),
            **_cpu_kernels(spec, compute, sched, "backward", ("backward",))}


def _cpu_kernels(spec, compute, sched, direction: str, names: tuple) -> dict:
    """One direction's CPU kernels, built with that direction's knobs: `names` of the
    compute's kernels, plus the direction's layout pass unless the kernels fuse it."""
    lanes, options = sched.lanes(direction), sched.options(direction)
    takes = OPTIONS.get(type(spec), {}).get(direction, ())
    refused = [name for name, value in options.items() if value and name not in takes]
    if refused:
        raise ValueError(f"schedule knob {direction}_{refused[0]}: {spec.name} kernels have no such option")
    funcs = compute(spec, lanes, **{name: options[name] for name in takes})
    funcs = {name: funcs[name] for name in names if name in funcs}
    if spec.packed and not options["fuse"]:
        layout = LAYOUT_PASS[direction]
        funcs[layout] = layout_kernels(spec.layout, spec.compute_dtype, lanes)[layout]
    return funcs


def as_module(funcs: dict) -> tvm.IRModule:
    """One IRModule of named kernels, each exported under its name."""
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
