"""Each op's math as TIR, one tree per schedule family: `cpu/<op>.py` and `gpu/<op>.py`.

Both trees hold one file per op, named after the spec (`spec.name`), with
`kernels(spec, schedule) -> dict[name, PrimFunc]`; what both trees share
(bin edges, C rounding, sampling, pyramid levels) is in `common/`.  A compute
knows no target: the schedule (`roigen.schedules`) gives it its keywords.  A
compute with tunable options declares them next to itself (`OPTIONS`), and
the schedule family asks `options_of`.
"""

from __future__ import annotations

import importlib

from . import _tvmscript  # noqa: F401 - before any compute parses a macro
from .cpu import LAYOUT_PASS

# The schedule families with a compute tree here.
FAMILIES = ("cpu", "gpu")


def compute_module(family: str, spec_cls):
    """`roigen/compute/<family>/<op>.py`, the op's compute for a schedule family."""
    name = f"{__name__}.{family}.{spec_cls.name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        raise ValueError(f"no {family} compute for {spec_cls.name} (roigen/compute/{family}/{spec_cls.name}.py)") \
            from None


def kernel_funcs(spec, family: str, schedule) -> dict:
    """The op's PrimFuncs for a schedule family, by kernel name.

    Every kernel is marked `tirx.noalias`: its buffers are distinct tensors
    (the runtime never passes one tensor twice), which lets LLVM vectorize.
    """
    funcs = compute_module(family, type(spec)).kernels(spec, schedule)
    return {name: func.with_attr("tirx.noalias", True) for name, func in funcs.items()}


def options_of(family: str, spec_cls, direction: str) -> tuple[str, ...]:
    """The keywords the op's compute takes for `direction` besides its block width."""
    return getattr(compute_module(family, spec_cls), "OPTIONS", {}).get(direction, ())


__all__ = ["FAMILIES", "LAYOUT_PASS", "compute_module", "kernel_funcs", "options_of"]
