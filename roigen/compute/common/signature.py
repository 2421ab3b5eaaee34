"""The symbolic sizes of a kernel's signature."""

from __future__ import annotations

from tvm import tirx


def dims(names: str, dtype: str) -> list[tirx.Var]:
    """Fresh size variables, one per name, for the `T.Buffer` shapes of one kernel's
    parameters.  Each kernel takes its own: a variable belongs to one function."""
    return [tirx.Var(name, dtype) for name in names.split()]
