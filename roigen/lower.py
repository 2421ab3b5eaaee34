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


# Passes of TVM's default pipeline whose work the kernels do not need, skipped for their
# build time.  HoistIfThenElse (with the simplify and RemoveNoOp passes it runs) moves
# conditions that do not change in a loop out of it, which LLVM's and nvcc's loop
# unswitching do as well; RemoveNoOp drops statements that do nothing, which code generation
# drops too.  Both ran over every expression of the sampled kernels: 2.9 s of
# roi_align_rotated's 8.1 s CPU build (float64, adaptive sampling).
_SKIPPED_PASSES = ["s_tir.HoistIfThenElse", "tirx.RemoveNoOp"]
# The GPU computes allocate only what they use (per-thread scalars, shared tiles sized to the
# block), so TVM's CompactBufferAllocation has nothing to shrink there, and its region analysis
# of the sampled kernels' index arithmetic took 90 % of their build (18 s of prroi_pool's
# forward's 20 s for CUDA).
_GPU_SKIPPED_PASSES = _SKIPPED_PASSES + ["s_tir.CompactBufferAllocation"]


def compile_cpu(funcs: dict, target):
    """tvm.compile for the CPU computes, with the passes they do not need skipped."""
    with tvm.transform.PassContext(disabled_pass=_SKIPPED_PASSES):
        return tvm.compile(as_module(funcs), target=target.tvm_target)


def compile_gpu(funcs: dict, target, config: dict | None = None):
    """tvm.compile for the GPU computes (CUDA, WGSL), with the passes they do not need skipped."""
    with tvm.transform.PassContext(config=config or {}, disabled_pass=_GPU_SKIPPED_PASSES):
        return tvm.compile(as_module(funcs), target=target.tvm_target)
