"""Per-target schedules, one module per target family (installed as `roigen.schedules`).

A family module has `space(spec, target)`, each tunable knob's candidates
(the default first) grouped by the kernels they shape (the CPU family's
groups are the directions, "forward" and "backward", built apart), and
`schedule(spec, target, **knobs)`, the schedule its kernels are built with.
A schedule gives the compute its keywords and the runtime its parameters
(`runtime_params()`); nothing outside this folder reads a knob by name.
`roigen.tune` searches the space and records the best point per device;
builds read those records.
"""

from . import cpu, gpu

FAMILIES = {"cpu": cpu, "gpu": gpu}
# Group names that mean "the knobs of this direction's kernels" (timed apart by the tuner).
DIRECTIONS = ("forward", "backward")


def family(target):
    try:
        return FAMILIES[target.family]
    except KeyError:
        raise ValueError(f"target {target.name!r} names the unknown schedule family {target.family!r}") from None


def knob_groups(spec, target) -> dict[str, dict[str, list]]:
    """The space grouped as the family groups it."""
    return family(target).space(spec, target)


def space_for(spec, target) -> dict[str, list]:
    """Every knob's candidates, the default first."""
    return {name: values for group in knob_groups(spec, target).values() for name, values in group.items()}


def default_point(spec, target) -> dict:
    """The untuned build's knobs: each knob's first candidate."""
    return {name: values[0] for name, values in space_for(spec, target).items()}


def schedule_for(spec, target, knobs: dict | None = None):
    """The schedule for `spec` on `target`: the family default, or these knob values."""
    return family(target).schedule(spec, target, **(knobs or {}))
