"""The bilinear sampling core shared by the RoIAlign family, forward and backward.

RoIAlign's sample grid is a tensor product: sample (iy, ix) of bin (ph, pw)
sits at (y[ph*gh + iy], x[pw*gw + ix]), and its four bilinear weights are
products of a y weight and an x weight.  So the geometry of a whole box is two
short tables, one per axis, each entry holding two corner offsets and two
weights (zero where the sample falls outside the map, which is how
torchvision's "skip this sample" reads).  Kernels fill the tables once per box
and then stream channel vectors through them.

The rules below are ROI_OPS.md's (and torchvision's) exactly, in its order of
floating-point operations.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...specs import MAX_SIDE

# Samples per bin along one axis, at most, inside a kernel.  The runtime refuses
# larger adaptive grids (its table limit) before any kernel runs, and the specs
# bound sampling_ratio and output_size by the same number, so this clamp is never
# visible; it keeps the kernels' own index arithmetic (int32 on GPUs: PH * grid,
# grid * grid) from overflowing whatever boxes they are given.
MAX_GRID = MAX_SIDE


def clamp(v, low, high, dt):
    """`v` clipped to [low, high] by comparisons, NaN to `low`: a value safe to cast to
    an integer.  Coordinates are clamped in floating point *before* any cast, since a
    float-to-int cast of a value out of the integer's range is undefined (x86 gives
    INT_MIN), and a finite box can still overflow to inf or NaN once scaled.  (min and
    max lower differently for NaN on each target; selects do not.)"""
    low, high = tirx.const(low, dt) if isinstance(low, (int, float)) else low, \
        tirx.const(high, dt) if isinstance(high, (int, float)) else high
    return tirx.Select(v > low, tirx.Select(v < high, v, high), low)


def c_round(x, dt):
    """C's round(): half away from zero (TIR's round is half-to-even).

    Values past 2**mantissa are already integers, and x + 0.5 would round there.
    """
    big = tirx.const(2.0 ** (52 if dt == "float64" else 23), dt)
    half = tirx.const(0.5, dt)
    rounded = tirx.if_then_else(x >= tirx.const(0, dt), T.floor(x + half), T.ceil(x - half))
    return tirx.if_then_else(T.fabs(x) >= big, x, rounded)


def box_rule(spec):
    """(start, extent) of the align family's box, each `f(rois, k, col)` along x (col 1)
    or y (col 2) in feature-map units, for RoIAlign, RoIWarp, PS-RoIAlign and PrRoIPool.

    RoIAlign: scaled, shifted by half a pixel when aligned, extent >= 1 unless
    aligned.  RoIWarp: corners snapped to the grid (C round), extent >= 1.
    PS-RoIAlign, deformable RoI pooling: always aligned, no minimum extent.  PrRoIPool: scaled, extent >= 0.
    """
    dt = spec.compute_dtype
    scale = tirx.const(spec.spatial_scale, dt)
    one = tirx.const(1.0, dt)
    lowest = None
    if spec.name == "roi_warp":
        def start(rois, k, col):
            return c_round(rois[k, col] * scale, dt)
        lowest = one
    elif spec.name == "prroi_pool":
        def start(rois, k, col):
            return rois[k, col] * scale
        lowest = tirx.const(0.0, dt)
    else:
        aligned = spec.name in ("ps_roi_align", "deform_roi_pool") or spec.aligned
        offset = tirx.const(0.5 if aligned else 0.0, dt)

        def start(rois, k, col):
            return rois[k, col] * scale - offset
        lowest = None if aligned else one

    def extent(rois, k, col):
        size = start(rois, k, col + 2) - start(rois, k, col)
        return size if lowest is None else T.max(size, lowest)

    return start, extent


def sample_grid(extent, pooled: int, sampling_ratio: int, dt, itype="int64"):
    """Samples per bin along one axis: fixed, or adaptive ceil(extent / pooled), never < 0."""
    if sampling_ratio > 0:
        return tirx.const(sampling_ratio, itype)
    # min/max, not `clamp`'s selects: this expression is inlined into every loop bound
    # and index of the kernels, and selects there doubled compile times.  Both lower
    # to ordered compare-and-select (fminf/fmaxf on CUDA), so NaN and +inf become
    # MAX_GRID (an absurd grid the runtime refuses) and -inf becomes 0.
    per_bin = T.min(extent / tirx.const(pooled, dt), tirx.const(MAX_GRID, dt))
    return T.Cast(itype, T.ceil(T.max(per_bin, tirx.const(0.0, dt))))


def box_grids(spec, itype="int64"):
    """`grids(rois, k)` -> (gh, gw): box k's samples per bin along y and x under `box_rule`
    (RoIAlign, RoIWarp, PS-RoIAlign), as `itype` (int32 on GPUs)."""
    _, extent = box_rule(spec)
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size

    def grids(rois, k):
        return (sample_grid(extent(rois, k, 2), PH, spec.sampling_ratio, dt, itype),
                sample_grid(extent(rois, k, 1), PW, spec.sampling_ratio, dt, itype))

    return grids


def inverse_count(gh, gw, dt):
    """1 / (gh * gw), a bin's share per sample in avg mode (1 for a bin of no samples)."""
    return tirx.const(1.0, dt) / T.Cast(dt, T.max(gh * gw, tirx.const(1, "int64")))


def sample_fraction(bin_index, sub, grid, pooled: int, dt):
    """Where sub-sample `sub` of bin `bin_index` sits along its box, as a fraction of the box:
    (bin + (sub + 0.5)/grid)/pooled, the `a` of ROI_OPS.md's box gradient."""
    return (T.Cast(dt, bin_index) + (T.Cast(dt, sub) + tirx.const(0.5, dt)) / T.Cast(dt, grid)) / tirx.const(pooled, dt)


def sample_pos(start, bin_size, grid, s, dt):
    """Coordinate of sample s along one axis: bin s // grid, sub-sample s % grid."""
    return (start + T.Cast(dt, s // grid) * bin_size
            + (T.Cast(dt, s % grid) + tirx.const(0.5, dt)) * bin_size / T.Cast(dt, grid))


def is_inside(pos, limit, dt):
    """Whether a sample at `pos` on an axis of `limit` pixels is read (torchvision skips it
    outside [-1, limit])."""
    return tirx.all(pos >= -tirx.const(1.0, dt), pos <= T.Cast(dt, limit))


def inside_flag(pos, limit, dt):
    """`is_inside` as a number: 1 or 0."""
    return T.if_then_else(is_inside(pos, limit, dt), tirx.const(1.0, dt), tirx.const(0.0, dt))


def axis_corners(pos, limit, dt, itype="int64"):
    """(low, high, low weight, high weight) of one sample coordinate on an axis of `limit` pixels.

    Both weights are zero where the sample falls outside [-1, limit] (torchvision
    skips the sample there); at the last pixel the edge value is read alone.  The
    corners lie in [0, limit) for every `pos`, NaN and inf included: the position is
    clamped before it becomes an index, so a skipped sample reads a valid pixel.
    """
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    inside = is_inside(pos, limit, dt)
    clamped = clamp(pos, zero, T.Cast(dt, limit - 1), dt)
    # The integer min too: limit - 1 may round up in float32 past 2**24.
    low = T.min(T.Cast(itype, clamped), limit - 1)
    frac = T.Select(low >= limit - 1, zero, clamped - T.Cast(dt, low))
    high = T.min(low + 1, limit - 1)
    return (low, high, T.Select(inside, one - frac, zero), T.Select(inside, frac, zero))


def axis_table_macro(dt: str, cells: bool = False):
    """A TIR macro filling one axis' sample table of one box (row `row` of the tables).

    `cells`: PrRoIPool's pixel pairs, weighted by the exact integrals of the unit cells
    they belong to (common/integral.py), instead of point samples.  For sample s (bin
    s // grid, sub-sample s % grid) it writes, at columns `base + 2*s` and `base + 2*s + 1`:
    the low and high corner indices times `stride` (int32: a row*W + col offset), and their
    weights times `scale` (zeroed outside [-1, limit]).
    """

    from .integral import pair_corners

    def corners(start, bin_size, grid, s, limit):
        if cells:
            return pair_corners(start, bin_size, grid, s, limit, dt)
        return axis_corners(sample_pos(start, bin_size, grid, s, dt), limit, dt)

    @T.macro
    def fill(itab, ftab, row, base, count, start, bin_size, grid, limit, stride, scale):
        for s in range(count):
            low, high, w_low, w_high = T.meta_var(corners(start, bin_size, grid, s, limit))
            itab[row, base + 2 * s] = T.Cast("int32", low * stride)
            itab[row, base + 2 * s + 1] = T.Cast("int32", high * stride)
            ftab[row, base + 2 * s] = w_low * scale
            ftab[row, base + 2 * s + 1] = w_high * scale

    return fill


def pool_edge(rois, k, col, scale, plus_one: bool, pooled, index, rounding, limit, dt, itype="int64"):
    """Edge of bin `index` of `pooled` along x (col 1) or y (col 2) of box k, snapped as
    RoIPool (`plus_one`: size x2' - x1' + 1) or PS-RoIPool (x2' - x1'), clipped to
    [0, limit]: torchvision's `min(max(int(rounding(index * (size / pooled))) + x1', 0), limit)`
    with x1' = round(x1 * scale), size >= 1.

    Computed in floating point and clamped before the cast, so a box of any finite
    size gives its true (clipped) bins: no integer overflows.  Integer-valued operands
    below 2**24 keep float32 exact, as torchvision's integer arithmetic.
    """
    one = tirx.const(1.0, dt)
    first = c_round(rois[k, col] * scale, dt)
    size = T.max(c_round(rois[k, col + 2] * scale, dt) - first + (one if plus_one else tirx.const(0.0, dt)), one)
    bin_size = size / (tirx.const(pooled, dt) if isinstance(pooled, int) else T.Cast(dt, pooled))
    edge = rounding(T.Cast(dt, index) * bin_size) + first
    return T.min(T.Cast(itype, clamp(edge, 0, T.Cast(dt, limit), dt)), limit)
