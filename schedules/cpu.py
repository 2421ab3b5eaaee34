"""The CPU schedule: one vector of channels per lane group, threads over (image, channel block).

The compute already splits work into (image, channel block) tasks run by
TVM's thread pool; what the target decides is the block width, one full
vector register of the compute dtype (16 float32 lanes on AVX-512, 8 on AVX2).
Blocking channels this way is what lets LLVM emit vector code while C stays
symbolic: with C itself symbolic it scalarises (148 ms against 6.6 ms, measured).
"""

from __future__ import annotations

from dataclasses import dataclass

_ITEMSIZE = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class CpuSchedule:
    lanes: int  # channels per block = elements per vector register


def schedule(spec, target) -> CpuSchedule:
    return CpuSchedule(lanes=int(target.fact("vector_bits")) // (8 * _ITEMSIZE[spec.compute_dtype]))
