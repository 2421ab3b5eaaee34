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
    sample_table_corners,
)
from ._align_box_gradient import blocked_box_gradient_kernels, flagged_slopes, scatter_sample
from ._transpose import block_transpose, result_slot

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
    gamma*w' * (its sum of gx); y alike.  A task keeps four sums per lane (gx, gx*a, and
    y's: sum gx*(1 - a) is their difference) and each bin's sums of gx and gy, added over
    the lanes at the box's end (`bin_totals`), in the lanes of the rows after those four.
    A box that keeps its samples' corners in the forward's tables gets (x slope flag, y
    slope flag / count) at entries 2n and 2n + 1 of `box_slopes`' table for its sample n
    (`sample_index`); other boxes' tasks find them from the forward's separable entries.
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
    table_corners = sample_table_corners(spec)
    ROW = spec.row_columns

    def bin_slot(j):
        """Row and lane of per-bin value j (x sums at p, y sums at P + p)."""
        return 4 + j // L, j % L

    K, S = dims("K S", "int64")
    @T.prim_func
    def box_slopes(rois: T.Buffer((K, ROW), dt), stab: T.Buffer((K, S), dt), H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh, gw = T.meta_var(grids(rois, k))
            if keeps_samples(spec, gh, gw):
                for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
                    n = T.meta_var(sample_index(PW, ph, pw, iy, ix, gh, gw))
                    x = T.meta_var(box.position(rois, k, 1, ph, pw, ix, gw))
                    stab[k, 2 * n] = slope_flag(x, W, dt)
                    # The x weights of the forward's table are not zeroed outside the map: this is.
                    stab[k, 2 * n + 1] = (slope_flag(box.position(rois, k, 2, ph, pw, iy, gh), H, dt)
                                          * inside_flag(x, W, dt) * inverse_count(gh, gw, dt))

    transpose = block_transpose(L)
    turned = result_slot(L)

    @T.macro
    def bin_totals(bins, acc, tr):
        # Each bin's two sums over the lanes, into acc's rows after the first four: L bins at
        # a time through a block transpose (lane j of every bin in row j), the rest one by one.
        flat = T.decl_buffer((acc.shape[0] * L,), dt, data=acc.data)
        for axis in range(2):
            for chunk in range(P // L):
                for i in T.unroll(L):
                    tr[1, i, T.Ramp(0, 1, L)] = bins[axis, chunk * L + i, T.Ramp(0, 1, L)]
                transpose(tr)
                for j in T.unroll(1, L):
                    tr[turned, 0, T.Ramp(0, 1, L)] = tr[turned, 0, T.Ramp(0, 1, L)] + tr[turned, j, T.Ramp(0, 1, L)]
                flat[T.Ramp(4 * L + axis * P + chunk * L, 1, L)] = tr[turned, 0, T.Ramp(0, 1, L)]
            for r in range(P % L):
                flat[4 * L + axis * P + P - P % L + r] = zero
                for i in range(L):
                    flat[4 * L + axis * P + P - P % L + r] = flat[4 * L + axis * P + P - P % L + r] + bins[
                        axis, P - P % L + r, i]

    @T.macro
    def add_sample(slab, gslab, gbin, p, acc, bins, ys, xs, mx, my, ax, ay):
        for lane in T.vectorized(L):
            gx, gy = T.meta_var(flagged_slopes(gbin[p, lane], slab, ys, xs, lane, mx, my))
            scatter_sample(gslab, gbin[p, lane], ys, xs, lane)
            acc[1, lane] = acc[1, lane] + gx * ax
            acc[3, lane] = acc[3, lane] + gy * ay
            bins[0, p, lane] = bins[0, p, lane] + gx
            bins[1, p, lane] = bins[1, p, lane] + gy

    @T.macro
    def box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr, bins, H, W):
        gh, gw = T.meta_var(grids(rois, k))
        for ph, pw in T.grid(PH, PW):
            p = T.meta_var(ph * PW + pw)
            for lane in T.vectorized(L):
                bins[0, p, lane] = zero
                bins[1, p, lane] = zero
            if keeps_samples(spec, gh, gw):
                for iy, ix in T.grid(gh, gw):
                    n = T.meta_var(sample_index(PW, ph, pw, iy, ix, gh, gw))
                    ys, xs = T.meta_var(table_corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                    add_sample(slab, gslab, gbin, p, acc, bins, ys, xs, stab[k, 2 * n], stab[k, 2 * n + 1],
                               sample_fraction(pw, ix, gw, PW, dt), sample_fraction(ph, iy, gh, PH, dt))
            else:
                for iy, ix in T.grid(gh, gw):
                    y, x = T.meta_var(geometry.position(rois, ftab, k, ph, pw, iy, ix, gh, gw))
                    ys, xs = T.meta_var(geometry.corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                    add_sample(slab, gslab, gbin, p, acc, bins, ys, xs, slope_flag(x, W, dt),
                               slope_flag(y, H, dt) * inverse_count(gh, gw, dt),
                               sample_fraction(pw, ix, gw, PW, dt), sample_fraction(ph, iy, gh, PH, dt))
        # The sums of gx and gy, from the bins' (gx*(1 - a) = gx - gx*a: a weight of
        # 1 - a at every sample was a vector broadcast of its own).
        for q in range(P):
            for lane in T.vectorized(L):
                acc[0, lane] = acc[0, lane] + bins[0, q, lane]
                acc[2, lane] = acc[2, lane] + bins[1, q, lane]
        bin_totals(bins, acc, tr)

    @T.macro
    def offsets(rois, k, slots, grad_rois, moved, axis):
        # Axis 0 (x, rois column 1) or 1 (y, column 2), a Python int: the bins' offset
        # gradients, and O, the sum over bins of the bin's offset times its sum of gx (gy).
        moved[axis] = zero
        for p in range(P):
            row, lane = T.meta_var(bin_slot(axis * P + p))
            moved[axis] = moved[axis] + box.offset(rois, k, 1 + axis, p // PW, p % PW) * slots[row, lane]
            grad_rois[k, BOX + axis * P + p] = slots[row, lane] * box.gamma * box.extent(rois, k, 1 + axis)

    @T.macro
    def finish(rois, k, total, slots, grad_out, out, grad_rois):
        moved = T.alloc_buffer((2,), dt)
        offsets(rois, k, slots, grad_rois, moved, 0)
        offsets(rois, k, slots, grad_rois, moved, 1)
        grad_rois[k, 1] = (total[0] - total[1] - box.gamma * moved[0]) * scale
        grad_rois[k, 3] = (total[1] + box.gamma * moved[0]) * scale
        grad_rois[k, 2] = (total[2] - total[3] - box.gamma * moved[1]) * scale
        grad_rois[k, 4] = (total[3] + box.gamma * moved[1]) * scale

    return {"box_slopes": box_slopes,
            **blocked_box_gradient_kernels(spec, lanes, 4 + (2 * P + L - 1) // L, lambda rois, k: one, box_sums,
                                           finish, work=(2, P, L), scatters=True)}


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, deform_roi_pool_kernels), **deform_box_gradient_kernels(spec, lanes)}
