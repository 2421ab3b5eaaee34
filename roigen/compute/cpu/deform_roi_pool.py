"""Deformable RoI pooling on the CPU: the align family's kernels (`_align.py`) with each bin's
samples shifted by the box's offsets (common/deform.py).

A shifted sample is not a row sample times a column sample, but it is a sum of one term per
axis and one per bin: its base position along y depends on (ph, iy) alone, and the bin adds
its shift (`_align.per_sample_geometry`).
`box_slopes`/`backward_boxes` (corners and offsets) run in the same (image, block) tasks on the
same tables (`deform_box_gradient_kernels`, _align_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...limits import keeps_samples
from ..common.deform import DeformBoxes
from ..common.sample_gradient import slope_flag
from ..common.sampling import inside_flag, inverse_count, sample_fraction
from ..common.signature import dims
from . import by_direction
from ._align import (
    Geometry,
    align_family_kernels,
    per_sample_geometry,
    sample_index,
)
from ._align_box_gradient import (
    blocked_box_gradient_kernels,
    kept_sample,
    put_factors,
    sample_slopes,
    scatter_sample,
)
from ._transpose import lane_sums, result_slot

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def deform_geometry(spec) -> Geometry:
    # A shifted sample is a sum of one term per axis and one per bin: its base position along
    # y depends on (ph, iy) alone (the second term of each pair is unused, 0).
    box = DeformBoxes(spec)
    zero = tirx.const(0.0, spec.compute_dtype)

    def grids(rois, k):
        return box.grid(rois, k, 2), box.grid(rois, k, 1)

    def terms(rois, k, col, s, grid):
        return box.base(rois, k, col, s, grid), zero

    def place(rois, k, ph, pw, row, column):
        return box.bin_start(rois, k, 2, ph, pw) + row[0], box.bin_start(rois, k, 1, ph, pw) + column[0]

    return per_sample_geometry(spec, grids, terms, place)


def deform_roi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, deform_geometry(spec), **options)


def deform_box_gradient_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    """`box_slopes` and `backward_boxes` (corners and offsets) in the forward's (image, block)
    tasks and on its tables (_align_box_gradient.py).

    x = x1' + (a + gamma*o)*w' with a the sample's fraction along the box and o its bin's
    x offset (common/deform.deform_sample_gradient), so with gx the sample's g-weighted x
    slope, d/dx1' = sum gx*(1 - a) - gamma*O, d/dx2' = sum gx*a + gamma*O with
    O = sum over bins of o * (the bin's sum of gx), and the bin's offset gets
    gamma*w' * (its sum of gx); y alike.

    A task keeps, per lane, each bin's sums of gx and gy (rows p and P + p of `vals`) and
    the box's sums of gx*a and gy*a (rows 2P and 2P + 1), and adds each row over its lanes
    at the box's end, L rows at a time (`lane_sums`): the task's partial sums are those
    2P + 2 values (sum gx is the sum of the bins').  Within a bin, each sample's slopes are
    summed times its factors and the bin's g multiplies the sums once (`sample_slopes`).
    A box that keeps its samples' corners in the forward's tables gets its sample n's
    factors (x slope flag, its product with a, y slope flag / count, its product with a)
    in `box_slopes`' table (`put_factors`, `kept_sample`); other boxes' tasks
    find them from the forward's separable entries.
    """
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    P = PH * PW
    BOX = spec.box_columns
    box = DeformBoxes(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    scale = tirx.const(spec.spatial_scale, dt)
    geometry = deform_geometry(spec)
    grids = geometry.grids
    kept = kept_sample(spec)
    ROW = spec.row_columns
    # vals' rows: the bins' x sums, their y sums, sum gx*a, sum gy*a, zeros to a whole
    # number of L-row chunks.
    XA, YA = 2 * P, 2 * P + 1
    CHUNKS = (2 * P + 2 + L - 1) // L
    add_lanes = lane_sums(L)
    summed = result_slot(L)

    def slot(j):
        """Row and lane of the task's value j (row j of vals, added over its lanes)."""
        return j // L, j % L

    K, S = dims("K S", "int64")
    @T.prim_func
    def box_slopes(rois: T.Buffer((K, ROW), dt), stab: T.Buffer((K, S), dt), H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh, gw = T.meta_var(grids(rois, k))
            if keeps_samples(spec, gh, gw):
                for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
                    n = T.meta_var(sample_index(PW, ph, pw, iy, ix, gh, gw))
                    x = T.meta_var(box.position(rois, k, 1, ph, pw, ix, gw))
                    mx = T.meta_var(slope_flag(x, W, dt))
                    # The x weights of the forward's table are not zeroed outside the map: this is.
                    my = T.meta_var(slope_flag(box.position(rois, k, 2, ph, pw, iy, gh), H, dt)
                                    * inside_flag(x, W, dt) * inverse_count(gh, gw, dt))
                    put_factors(stab, k, n, mx, mx * sample_fraction(pw, ix, gw, PW, dt),
                                my, my * sample_fraction(ph, iy, gh, PH, dt))

    @T.macro
    def add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, mxa, my, mya):
        # sums: the bin's sums of each slope times the sample's factors, g applied per bin.
        for lane in T.vectorized(L):
            sx, sy = T.meta_var(sample_slopes(slab, ys, xs, lane))
            scatter_sample(gslab, gbin[p, lane], ys, xs, lane)
            sums[0, lane] = sums[0, lane] + mx * sx
            sums[1, lane] = sums[1, lane] + mxa * sx
            sums[2, lane] = sums[2, lane] + my * sy
            sums[3, lane] = sums[3, lane] + mya * sy

    @T.macro
    def box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr, vals, H, W):
        gh, gw = T.meta_var(grids(rois, k))
        sums = T.alloc_buffer((4, L), dt)
        for j in range(2 * P, CHUNKS * L):
            for lane in T.vectorized(L):
                vals[j, lane] = zero
        for ph, pw in T.grid(PH, PW):
            p = T.meta_var(ph * PW + pw)
            for j in range(4):
                for lane in T.vectorized(L):
                    sums[j, lane] = zero
            if keeps_samples(spec, gh, gw):
                for iy, ix in T.grid(gh, gw):
                    ys, xs, mx, mxa, my, mya = T.meta_var(
                        kept(rois, itab, ftab, stab, k, ph, pw, iy, ix, gh, gw, H, W))
                    add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, mxa, my, mya)
            else:
                for iy, ix in T.grid(gh, gw):
                    y, x = T.meta_var(geometry.position(rois, ftab, k, ph, pw, iy, ix, gh, gw))
                    ys, xs = T.meta_var(geometry.corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                    mx = T.meta_var(slope_flag(x, W, dt))
                    my = T.meta_var(slope_flag(y, H, dt) * inverse_count(gh, gw, dt))
                    add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, mx * sample_fraction(pw, ix, gw, PW, dt),
                               my, my * sample_fraction(ph, iy, gh, PH, dt))
            for lane in T.vectorized(L):
                vals[p, lane] = gbin[p, lane] * sums[0, lane]
                vals[XA, lane] = vals[XA, lane] + gbin[p, lane] * sums[1, lane]
                vals[P + p, lane] = gbin[p, lane] * sums[2, lane]
                vals[YA, lane] = vals[YA, lane] + gbin[p, lane] * sums[3, lane]
        for chunk in range(CHUNKS):
            add_lanes(vals, chunk * L, tr)
            for lane in T.vectorized(L):
                acc[chunk, lane] = tr[summed, 0, lane]

    @T.macro
    def offsets(rois, k, slots, grad_rois, moved, axis):
        # Axis 0 (x, rois column 1) or 1 (y, column 2), a Python int: the bins' offset
        # gradients, O (the sum over bins of the bin's offset times its sum of gx or gy),
        # and the sum of gx or gy over the box.
        moved[axis] = zero
        moved[2 + axis] = zero
        for p in range(P):
            row, lane = T.meta_var(slot(axis * P + p))
            moved[axis] = moved[axis] + box.offset(rois, k, 1 + axis, p // PW, p % PW) * slots[row, lane]
            moved[2 + axis] = moved[2 + axis] + slots[row, lane]
            grad_rois[k, BOX + axis * P + p] = slots[row, lane] * box.gamma * box.extent(rois, k, 1 + axis)

    @T.macro
    def finish(rois, k, total, slots, grad_out, out, grad_rois):
        moved = T.alloc_buffer((4,), dt)
        offsets(rois, k, slots, grad_rois, moved, 0)
        offsets(rois, k, slots, grad_rois, moved, 1)
        xa = T.meta_var(slots[slot(XA)])
        ya = T.meta_var(slots[slot(YA)])
        grad_rois[k, 1] = (moved[2] - xa - box.gamma * moved[0]) * scale
        grad_rois[k, 3] = (xa + box.gamma * moved[0]) * scale
        grad_rois[k, 2] = (moved[3] - ya - box.gamma * moved[1]) * scale
        grad_rois[k, 4] = (ya + box.gamma * moved[1]) * scale

    return {"box_slopes": box_slopes,
            **blocked_box_gradient_kernels(spec, lanes, CHUNKS, lambda rois, k: one, box_sums, finish,
                                           work=(CHUNKS * L, L), scatters=True)}


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, deform_roi_pool_kernels), **deform_box_gradient_kernels(spec, lanes)}
