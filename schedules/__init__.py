"""Per-target schedules, one module per target family (installed as `roigen.schedules`).

A family's `schedule(spec, target)` returns the knobs its kernels are built
with; the compute (`roigen.compute`) reads nothing else about the target.
"""

from . import cpu, gpu

FAMILIES = {"cpu": cpu.schedule, "gpu": gpu.schedule}


def schedule_for(spec, target):
    try:
        rule = FAMILIES[target.family]
    except KeyError:
        raise ValueError(f"target {target.name!r} names the unknown schedule family {target.family!r}") from None
    return rule(spec, target)
