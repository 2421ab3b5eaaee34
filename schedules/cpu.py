"""The CPU schedule: one vector of channels per lane group, threads over (image, channel block).

The compute already splits work into (image, channel block) tasks run by
TVM's thread pool; what the target decides is the block width L, by default
one full vector register of the compute dtype (16 float32 lanes on AVX-512,
8 on AVX2).  Blocking channels this way is what lets LLVM emit vector code
while C stays symbolic: with C itself symbolic it scalarises (148 ms against
6.6 ms, measured).

Tunable: `lanes` (half, one or two registers per block: narrower blocks mean
more tasks, wider ones amortise each sample's table reads over more channels).
"""

from __future__ import annotations

from dataclasses import dataclass

_ITEMSIZE = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class CpuSchedule:
    lanes: int  # channels per block


def _register(spec, target) -> int:
    return int(target.fact("vector_bits")) // (8 * _ITEMSIZE[spec.compute_dtype])


def space(spec, target) -> dict[str, list]:
    """Each knob's candidates, the default first.  Ops on plain NCHW (the position-sensitive
    ones) have no channel blocks, so nothing to tune."""
    if not spec.packed:
        return {}
    register = _register(spec, target)
    return {"lanes": [register, max(1, register // 2), register * 2]}


def schedule(spec, target, **knobs) -> CpuSchedule:
    return CpuSchedule(**{"lanes": _register(spec, target), **knobs})
