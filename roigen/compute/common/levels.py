"""Pyramid helpers shared by the CPU and GPU computes: which level a bin belongs to, the
adaptive bin bounds of SPP, and the start value of every max bin."""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

# torchvision starts every max bin at -FLT_MAX, whatever the dtype.
LOWEST = -3.4028234663852886e38


def pick(index, values, dtype="int64"):
    """values[index] for a Python list of ints and a TIR index (a small select chain)."""
    expr = tirx.const(values[-1], dtype)
    for i in range(len(values) - 2, -1, -1):
        expr = tirx.if_then_else(index == i, tirx.const(values[i], dtype), expr)
    return expr


def level_of(index, offsets, dtype="int32"):
    """Which level of a pyramid bin `index` belongs to, given each level's first bin (offsets[0] == 0)."""
    expr = tirx.const(0, dtype)
    for off in offsets[1:]:
        expr = expr + T.Cast(dtype, index >= off)
    return expr


def lo(i, size, n):
    """First row (or column) of adaptive bin i of n over `size`: floor(i*size/n)."""
    return i * size // n


def hi(i, size, n):
    """One past the last row of adaptive bin i of n: ceil((i+1)*size/n)."""
    return ((i + 1) * size + n - 1) // n
