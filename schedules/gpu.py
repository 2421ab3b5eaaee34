"""The GPU schedule (CUDA and Vulkan): thread-block size, sample-table size, atomics.

The compute (`roigen.compute.gpu`) maps threads over output elements with
channels innermost; what the target decides is how many threads share a
block (by default its limit, capped at 256), how many samples per axis a
block's shared table holds, and whether float atomics may scatter the
backward.  Tunable: `threads` and `table`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Threads per block are a multiple of the 32-wide warp (NVIDIA) / subgroup.
_BLOCK_CAP = 256
# Samples per axis in one shared-memory table fill; the adaptive grid of a
# typical box (FPN levels: 2-4) fits in one, and larger grids loop.
_TABLE = 32
# Thread blocks of one kernel that must fit on an SM at once (CUDA): ptxas caps
# each kernel's registers to leave room for them.  Left to itself, ptxas aims at
# full occupancy, capped the kernels at 32 registers and spilled.
_MIN_BLOCKS = 2


@dataclass(frozen=True)
class GpuSchedule:
    threads: int  # threads per block
    table: int  # sample-table slots per axis (<= threads: one thread fills one slot)
    atomics: bool  # whether backward_atomic is built
    min_blocks: int  # resident blocks per SM each kernel's registers leave room for (CUDA)

    def runtime_params(self) -> dict:
        return {}  # the kernels' launches carry their own block size


def space(spec, target) -> dict[str, dict[str, list]]:
    """Each knob's candidates, the default first: one group, since every knob shapes
    both directions' kernels."""
    limit = min(_BLOCK_CAP, int(target.fact("max_threads_per_block")))
    return {"kernels": {"threads": [t for t in dict.fromkeys((limit, 128, 64)) if t <= limit],
                        "table": [_TABLE, 16, 8]}}


def schedule(spec, target, **knobs) -> GpuSchedule:
    (group,) = space(spec, target).values()
    unknown = set(knobs) - set(group)
    if unknown:
        raise ValueError(f"schedule knob {sorted(unknown)[0]}: GPU kernels have no such knob; knobs: {sorted(group)}")
    chosen = {**{name: values[0] for name, values in group.items()}, **knobs}
    threads = chosen["threads"]
    return GpuSchedule(threads=threads, table=min(chosen["table"], threads), atomics=bool(target.fact("atomics")),
                       min_blocks=_MIN_BLOCKS)
