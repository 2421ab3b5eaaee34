"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading unit
cells with their exact integrals (common/integral.py) where RoIAlign reads samples."""

from __future__ import annotations

from tvm import tirx

from ..common.sampling import box_rule
from . import by_direction
from ._align import align_family_kernels, align_tables

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def kernels(spec, schedule) -> dict:
    return by_direction(spec, schedule, prroi_pool_kernels)
