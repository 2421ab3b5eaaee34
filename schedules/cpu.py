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
- the compute's options (`roigen.compute.OPTIONS`, the align family):
  `fuse`, convert the caller's layout inside each task, on a slab that stays
  in cache, instead of in separate pack/unpack passes over the whole map;
  `shuffle` (forward), write the output through in-register block transposes
  instead of lane by lane.

The default point is one register of lanes, fused layout conversion and
transposed writes: fusing won in every case measured on the development
machine (5-50 %, forward and backward, NCHW and channels_last, RoIAlign and
RoIWarp, avg and max), transposing on most.  What stays device- and
workload-dependent is the block width, which the tuner picks per direction:
8 lanes for maps whose slab outgrows L2 (mask_head's forward, 1.5x), 32 for
many channels and bins (c4_head's backward, 1.17x).
"""

from __future__ import annotations

from dataclasses import dataclass

from roigen.compute import OPTIONS

_ITEMSIZE = {"float32": 4, "float64": 8}
DIRECTIONS = ("forward", "backward")
# Each option's candidates, the default first.
_OPTION_VALUES = {"fuse": [True, False], "shuffle": [True, False]}


@dataclass(frozen=True)
class CpuSchedule:
    forward_lanes: int  # channels per block
    backward_lanes: int
    forward_fuse: bool = False  # layout conversion inside the kernel's tasks
    backward_fuse: bool = False
    forward_shuffle: bool = False  # output through block transposes

    def lanes(self, direction: str) -> int:
        return getattr(self, f"{direction}_lanes")

    def options(self, direction: str) -> dict:
        """The direction's compute options (fuse, shuffle) by name."""
        prefix = f"{direction}_"
        return {name[len(prefix):]: value for name, value in vars(self).items()
                if name.startswith(prefix) and name != f"{direction}_lanes"}


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
        for option in OPTIONS.get(type(spec), {}).get(direction, ()):
            knobs[f"{direction}_{option}"] = _OPTION_VALUES[option]
    return knobs


def schedule(spec, target, **knobs) -> CpuSchedule:
    register = _register(spec, target)
    defaults = {name: values[0] for name, values in space(spec, target).items()}
    return CpuSchedule(**{"forward_lanes": register, "backward_lanes": register, **defaults, **knobs})
