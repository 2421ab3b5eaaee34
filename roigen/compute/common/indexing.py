"""Flat indices into coordinates, the same way in every kernel."""

from __future__ import annotations


def unravel(index, extents) -> tuple:
    """The coordinates of a flat row-major `index` over `extents`, outermost first:
    unravel(i, (K, S, C)) == (i // (C * S), i // C % S, i % C).

    The outermost coordinate is not wrapped: the caller's loop or guard bounds it.
    Assigned to a tuple in TVMScript (`k, b, c = unravel(...)`), each becomes a let.
    """
    inner = list(reversed(extents[1:]))
    coords, stride = [], None
    for extent in inner:
        coords.append((index if stride is None else index // stride) % extent)
        stride = extent if stride is None else stride * extent
    coords.append(index if stride is None else index // stride)
    return tuple(reversed(coords))
