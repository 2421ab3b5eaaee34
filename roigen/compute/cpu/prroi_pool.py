"""Precise RoI Pooling on the CPU: the align family's kernels (`_align.py`) reading each
bin's pixels, two to a table entry, weighted by their exact integrals (common/integral.py)
where RoIAlign reads samples, and `backward_boxes`, the gradient with respect to the boxes,
in the same (image, block) tasks on the same tables (`prroi_box_gradient_kernels`,
_align_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, hold_macro, interpolate
from ..common.integral import has_area, point_corners
from ..common.sampling import box_rule
from . import by_direction
from ._align import align_family_kernels, align_tables
from ._align_box_gradient import blocked_box_gradient_kernels, scatter_sample

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def prroi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, align_tables(spec, *box_rule(spec), cells=True), **options)


def prroi_box_gradient_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    """`backward_boxes` in the forward's (image, block) tasks and on its pixel-pair tables
    (_align_box_gradient.py), common/integral.py's box gradient.

    A bin's gradient along x1' is (bh * s0 - sums0) / A for its left edge, where sums0 is
    the sum over channels of g times the surface integrated along the edge (cells of the
    bin's rows at x = bx1), s0 the sum of g * out over the bin's channels and A = bw * bh;
    the right edge, and y, alike (the existing per-box form's formula).  Per lane a task
    keeps four sums: g times the edge integrals weighted by the bin's shares of x1', x2',
    y1', y2'.  The y entries' weights in the forward's tables carry 1/A already, the x
    entries' do not (finish divides).  The s0 terms of all bins add up to S / extent along each
    axis (S = sum of g * out over the box), which `finish` adds once.
    """
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    start, extent = box_rule(spec)
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    geometry = align_tables(spec, start, extent, cells=True)
    grids = geometry.grids
    hold = hold_macro()

    def read(slab, lane):
        # slab[0, 0, 0, row*W + col] addresses pixel (row, col); table offsets are int32.
        return lambda y, x: slab[0, 0, 0, T.Cast("int64", y) + T.Cast("int64", x), lane]

    def rows(point, W):
        """A point along y as table entries: its two rows' offsets (row * W) and weights."""
        low, high, w_low, w_high = point
        return low * W, high * W, w_low, w_high

    def edge_integrals(col):
        """A macro adding to `acc` (sums 0 and 1 along x, col 1; 2 and 3 along y, col 2) the
        g-weighted integrals of every bin edge across `col`: for each row of bins (x) or
        column of bins (y), its PW + 1 (PH + 1) edges, each over the cells of that row
        (column), at x = x1 + e * bw (y = y1 + e * bh)."""
        pooled, across = (PW, PH) if col == 1 else (PH, PW)
        first = 2 * (col - 1)

        def bin_of(o, i):
            return o * PW + i if col == 1 else i * PW + o

        @T.macro
        def add(slab, rois, itab, ftab, gbin, k, acc, edges, gh, gw, size, H, W):
            # Every row (column) of bins has its edges at the same x (y): their corners are
            # found once per box and held (bilinear.hold_macro; LLVM left the clamps and
            # compares as branches inside the loops).  Each cell's corners are read from the
            # table once and serve all the row's edges, its PW + 1 reads of a row pair
            # loaded back to back.
            held = T.alloc_buffer((2 * (pooled + 1),), "int64")
            weight = T.alloc_buffer((2 * (pooled + 1),), dt)
            for e in range(pooled + 1):
                hold(held, weight, 2 * e, point_corners(start(rois, k, col) + T.Cast(dt, e) * size,
                                                        W if col == 1 else H, dt))
            for o in range(across):
                for e, lane in T.grid(pooled + 1, L):
                    edges[e, lane] = zero
                for c in range(gh if col == 1 else gw):
                    for e in T.unroll(pooled + 1):
                        point = T.meta_var(corners_at(held, weight, 2 * e))
                        ys, xs = T.meta_var(
                            (corners_at(itab, ftab, k, 2 * (o * gh + c)), point) if col == 1 else
                            (rows(point, W), corners_at(itab, ftab, k, 2 * PH * gh + 2 * (o * gw + c))))
                        for lane in T.vectorized(L):
                            edges[e, lane] = edges[e, lane] + interpolate(read(slab, lane), ys, xs)
                for i in range(pooled):
                    a0 = T.meta_var(T.Cast(dt, i) / tirx.const(pooled, dt))
                    a1 = T.meta_var(T.Cast(dt, i + 1) / tirx.const(pooled, dt))
                    for lane in T.vectorized(L):
                        g = T.meta_var(gbin[bin_of(o, i), lane])
                        acc[first, lane] = acc[first, lane] + g * (edges[i + 1, lane] * (one - a1)
                                                                   - edges[i, lane] * (one - a0))
                        acc[first + 1, lane] = acc[first + 1, lane] + g * (edges[i + 1, lane] * a1
                                                                           - edges[i, lane] * a0)

        return add

    vertical, horizontal = edge_integrals(1), edge_integrals(2)

    @T.macro
    def box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr, edges, H, W):
        gh, gw = T.meta_var(grids(rois, k))
        if gslab is not None:
            # The map's gradient, as the input gradient's kernel scatters it: each bin's g
            # times each of its pixel pairs' weights, in the same order.
            for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
                ys, xs = T.meta_var(geometry.corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                for lane in T.vectorized(L):
                    scatter_sample(gslab, gbin[ph * PW + pw, lane], ys, xs, lane)
        # Neighbouring bins share an edge (bin pw's right is bin pw + 1's left), so each row
        # of bins integrates its PW + 1 edges once, and each column its PH + 1: 112 edge
        # integrals for a 7 x 7 grid, against 196 per bin.
        if has_area(spec, rois, k):
            vertical(slab, rois, itab, ftab, gbin, k, acc, edges, gh, gw,
                     extent(rois, k, 1) / tirx.const(PW, dt), H, W)
            horizontal(slab, rois, itab, ftab, gbin, k, acc, edges, gh, gw,
                       extent(rois, k, 2) / tirx.const(PH, dt), H, W)

    @T.macro
    def finish(rois, k, total, slots, grad_out, out, grad_rois):
        if has_area(spec, rois, k):
            # S, the sum of g * out over the box, L channels at a time.
            dot = T.alloc_buffer((L,), dt)
            s = T.alloc_buffer((1,), dt)
            flat_g = T.decl_buffer((grad_out.shape[0] * grad_out.shape[1] * grad_out.shape[2],), dt,
                                   data=grad_out.data)
            flat_o = T.decl_buffer((out.shape[0] * out.shape[1] * out.shape[2],), dt, data=out.data)
            span = T.meta_var(grad_out.shape[1] * grad_out.shape[2])
            for lane in T.vectorized(L):
                dot[lane] = zero
            for i in range(span // L):
                for lane in T.vectorized(L):
                    dot[lane] = dot[lane] + flat_g[k * span + i * L + lane] * flat_o[k * span + i * L + lane]
            s[0] = zero
            for lane in range(L):
                s[0] = s[0] + dot[lane]
            for i in range(span % L):
                s[0] = s[0] + flat_g[k * span + span - span % L + i] * flat_o[k * span + span - span % L + i]
            area = T.meta_var(extent(rois, k, 1) / tirx.const(PW, dt) * (extent(rois, k, 2) / tirx.const(PH, dt)))
            grad_rois[k, 1] = (total[0] + s[0] / extent(rois, k, 1)) * scale
            grad_rois[k, 3] = (total[1] - s[0] / extent(rois, k, 1)) * scale
            grad_rois[k, 2] = (total[2] / area + s[0] / extent(rois, k, 2)) * scale
            grad_rois[k, 4] = (total[3] / area - s[0] / extent(rois, k, 2)) * scale

    return blocked_box_gradient_kernels(spec, lanes, 4, lambda rois, k: one, box_sums, finish,
                                        work=(max(PH, PW) + 1, L), scatters=True)


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, prroi_pool_kernels),
            **prroi_box_gradient_kernels(spec, lanes)}
