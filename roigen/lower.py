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


# The GPU computes allocate only what they use (per-thread scalars, shared tiles sized to the
# block), so TVM's CompactBufferAllocation has nothing to shrink there, and its region analysis
# of the sampled kernels' index arithmetic took 90 % of their build (18 s of prroi_pool's
# forward's 20 s for CUDA).
_GPU_SKIPPED_PASSES = ["s_tir.CompactBufferAllocation"]


def compile_gpu(funcs: dict, target, config: dict | None = None):
    """tvm.compile for the GPU computes (CUDA, WGSL), with the passes they do not need skipped."""
    with tvm.transform.PassContext(config=config or {}, disabled_pass=_GPU_SKIPPED_PASSES):
        return tvm.compile(as_module(funcs), target=target.tvm_target)
