"""The CPU schedule: one vector of channels per lane group, threads over (image, channel block).

The compute already splits work into (image, channel block) tasks run by
TVM's thread pool; what the target decides, for the forward and the backward
kernel apart (each reads or writes its own blocked copy of the map, so they
need not agree):

- `lanes`, the block width L: by default one full vector register of the
  compute dtype (16 float32 lanes on AVX-512, 8 on AVX2).  Blocking channels
  this way is what lets LLVM emit vector code while C stays symbolic: with C
  itself symbolic it scalarises (148 ms against 6.6 ms, measured).  Narrower
  blocks make smaller slabs (the sampled working set: a 200x272 map is 3.5 MB
  at 16 lanes, 1.7 MB at 8) and put two pixels in a cache line; wider ones
  amortise each sample's table reads and loop overhead over more channels.
- `fuse` (ops in `roigen.compute.FUSES_LAYOUT`): convert the caller's layout
  inside each task, on a slab that stays in cache, instead of in separate
  pack/unpack passes over the whole map.  The default is the plain pipeline
  (separate passes, as every packed op has them); the tuner decides the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from roigen.compute import FUSES_LAYOUT

_ITEMSIZE = {"float32": 4, "float64": 8}
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class CpuSchedule:
    forward_lanes: int  # channels per block
    backward_lanes: int
    forward_fuse: bool = False  # layout conversion inside the kernel's tasks
    backward_fuse: bool = False

    def lanes(self, direction: str) -> int:
        return getattr(self, f"{direction}_lanes")

    def fuse(self, direction: str) -> bool:
        return getattr(self, f"{direction}_fuse")


def _register(spec, target) -> int:
    return int(target.fact("vector_bits")) // (8 * _ITEMSIZE[spec.compute_dtype])


def space(spec, target) -> dict[str, list]:
    """Each knob's candidates, the default first.  Ops on plain NCHW (the position-sensitive
    ones) have no channel blocks, so nothing to tune."""
    if not spec.packed:
        return {}
    register = _register(spec, target)
    knobs = {}
    for direction in DIRECTIONS:
        knobs[f"{direction}_lanes"] = [register, max(1, register // 2), register * 2]
        if type(spec) in FUSES_LAYOUT:
            knobs[f"{direction}_fuse"] = [False, True]
    return knobs


def schedule(spec, target, **knobs) -> CpuSchedule:
    register = _register(spec, target)
    return CpuSchedule(**{"forward_lanes": register, "backward_lanes": register, **knobs})
