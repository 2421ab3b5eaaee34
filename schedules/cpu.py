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
- the options a compute declares (`OPTIONS` in `roigen/compute/cpu/<op>.py`):
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

from roigen.compute import LAYOUT_PASS, options_of

_ITEMSIZE = {"float32": 4, "float64": 8}
DIRECTIONS = ("forward", "backward")
# Each compute option's candidates, the default first.
_OPTION_VALUES = {"fuse": [True, False], "shuffle": [True, False]}


@dataclass(frozen=True)
class CpuSchedule:
    """One point of the space: each direction's knobs, by their names in the compute."""

    packed: bool  # whether the op's kernels read channel blocks (else: no knobs)
    forward: tuple = ()  # ((keyword, value), ...): lanes, and the compute's options
    backward: tuple = ()

    def compute_kwargs(self, direction: str) -> dict:
        """The keywords the compute builds `direction`'s kernels with."""
        return dict(getattr(self, direction))

    def layout_pass(self, direction: str) -> str | None:
        """The separate layout kernel `direction` runs, or None: the op reads plain NCHW,
        or its kernels convert the layout inside their own tasks (`fuse`)."""
        if not self.packed or self.compute_kwargs(direction).get("fuse"):
            return None
        return LAYOUT_PASS[direction]

    def runtime_params(self) -> dict:
        """What the runtime needs to call the kernels: each direction's channel-block width
        and separate layout kernel."""
        return {"lanes": {d: self.compute_kwargs(d).get("lanes", 0) for d in DIRECTIONS},
                "layout_pass": {d: self.layout_pass(d) for d in DIRECTIONS}}


def _register(spec, target) -> int:
    return int(target.fact("vector_bits")) // (8 * _ITEMSIZE[spec.compute_dtype])


def space(spec, target) -> dict[str, dict[str, list]]:
    """Each knob's candidates (the default first), grouped by the direction whose kernels
    they shape: each direction is built apart.  Ops on plain NCHW (the position-sensitive
    ones) have no channel blocks, so nothing to tune."""
    if not spec.packed:
        return {}
    register = _register(spec, target)
    groups = {}
    for direction in DIRECTIONS:
        knobs = {f"{direction}_lanes": [register, max(1, register // 2), register * 2]}
        for option in options_of("cpu", type(spec), direction):
            knobs[f"{direction}_{option}"] = _OPTION_VALUES[option]
        groups[direction] = knobs
    return groups


def schedule(spec, target, **knobs) -> CpuSchedule:
    groups = space(spec, target)
    unknown = set(knobs) - {name for group in groups.values() for name in group}
    if unknown:
        raise ValueError(f"schedule knob {sorted(unknown)[0]}: {spec.name} kernels on {target.name} have no such "
                         f"knob; knobs: {sorted(name for group in groups.values() for name in group)}")
    chosen = {}
    for direction, group in groups.items():
        values = {name: knobs.get(name, candidates[0]) for name, candidates in group.items()}
        chosen[direction] = tuple(sorted((name[len(direction) + 1:], value) for name, value in values.items()))
    return CpuSchedule(packed=spec.packed, **chosen)
