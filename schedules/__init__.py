"""Per-target schedules, one module per target family (installed as `roigen.schedules`).

A family module has `space(spec, target)`, each tunable knob's candidates
(the default first), and `schedule(spec, target, **knobs)`, the knobs its
kernels are built with; the compute (`roigen.compute`) reads nothing else
about the target.  `roigen.tune` searches the space and records the best
point per device; builds read those records.
"""

from . import cpu, gpu

FAMILIES = {"cpu": cpu, "gpu": gpu}


def family(target):
    try:
        return FAMILIES[target.family]
    except KeyError:
        raise ValueError(f"target {target.name!r} names the unknown schedule family {target.family!r}") from None


def space_for(spec, target) -> dict[str, list]:
    return family(target).space(spec, target)


def default_point(spec, target) -> dict:
    """The untuned build's knobs: each knob's first candidate."""
    return {name: values[0] for name, values in space_for(spec, target).items()}


def schedule_for(spec, target, knobs: dict | None = None):
    """The schedule for `spec` on `target`: the family default, or these knob values."""
    return family(target).schedule(spec, target, **(knobs or {}))
