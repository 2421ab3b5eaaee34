"""RoIAlign in rotated boxes on the CPU: the align family's kernels (`_align.py`) with a
rotated sample geometry (`_align.per_sample_geometry`).

A rotated sample is no longer a row sample times a column sample, but its position is still
a sum of one term per axis: y = (yy*cos - xx*sin) + cy with yy from the bin row and xx
from the bin column (common/rotated.py): each row sample's terms are (yy*cos, yy*sin),
each column sample's (xx*sin, xx*cos).  `box_slopes`/`backward_boxes`,
the gradient with respect to the boxes, run in the same (image, block) tasks on the
same tables (`rotated_box_gradient_kernels`, _align_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...limits import keeps_samples
from ..common.rotated import RotatedBoxes
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

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def rotated_geometry(spec) -> Geometry:
    # A sample's position is a sum of one term per axis: y = (yy*cos - xx*sin) + cy with yy
    # from the bin row and xx from the bin column (common/rotated.py).
    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)

    def grids(rois, k):
        return box.grid(rois, k, 2, PH), box.grid(rois, k, 1, PW)

    def terms(rois, k, col, s, grid):
        t = box.angle(rois, k)
        if col == 2:  # (yy*cos, yy*sin) of a row sample
            yy = box.offset_in_box(rois, k, 2, PH, grid, s)
            return yy * T.cos(t), yy * T.sin(t)
        xx = box.offset_in_box(rois, k, 1, PW, grid, s)  # (xx*sin, xx*cos) of a column sample
        return xx * T.sin(t), xx * T.cos(t)

    def place(rois, k, ph, pw, row, column):
        return row[0] - column[0] + box.centre(rois, k, 2), row[1] + column[1] + box.centre(rois, k, 1)

    return per_sample_geometry(spec, grids, terms, place)


def rotated_box_gradient_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    """`box_slopes` and `backward_boxes` in the forward's (image, block) tasks and on its
    tables (_align_box_gradient.py).

    A sample sits at y = yy*cos - xx*sin + cy', x = yy*sin + xx*cos + cx' with yy = h'*ay,
    xx = w'*ax, ay = a_y - 1/2 its fraction along the box less a half (x alike): its
    row's and its column's.  So with gx, gy the sample's g-weighted slopes, the box's five
    sums (common/rotated.rotated_sample_gradient) are d/dcx' = sum gx, d/dcy' = sum gy,
    d/dw' = cos*sum gx*ax - sin*sum gy*ax, d/dh' = sin*sum gx*ay + cos*sum gy*ay and
    d/dt = h'*(cos*sum gx*ay - sin*sum gy*ay) - w'*(sin*sum gx*ax + cos*sum gy*ax):
    six sums per lane, the box's own terms applied once at the end.  Within a bin, each
    sample's slopes are summed times its factors and the bin's g multiplies the six sums once
    (`sample_slopes`); ay is one per row of samples, so each row's sums of gx and gy are
    multiplied by it once.  A box that keeps its samples' corners in the forward's tables
    gets its sample n's factors (x slope flag mx, y slope flag / count my, mx*ax, my*ax) in
    `box_slopes`' table (`put_factors`, `kept_sample`): its tasks find no
    geometry.  Other boxes' tasks find them from the forward's separable entries, as its
    tasks do.
    """
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    half = tirx.const(0.5, dt)
    scale = tirx.const(spec.spatial_scale, dt)
    geometry = rotated_geometry(spec)
    grids = geometry.grids
    kept = kept_sample(spec)

    K, S = dims("K S", "int64")
    @T.prim_func
    def box_slopes(rois: T.Buffer((K, 6), dt), stab: T.Buffer((K, S), dt), H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh, gw = T.meta_var(grids(rois, k))
            if keeps_samples(spec, gh, gw):
                cos = T.meta_var(T.cos(box.angle(rois, k)))
                sin = T.meta_var(T.sin(box.angle(rois, k)))
                for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
                    yy = T.meta_var(box.offset_in_box(rois, k, 2, PH, gh, ph * gh + iy))
                    xx = T.meta_var(box.offset_in_box(rois, k, 1, PW, gw, pw * gw + ix))
                    y, x = T.meta_var(box.onto_map(yy, xx, cos, sin, box.centre(rois, k, 2), box.centre(rois, k, 1)))
                    n = T.meta_var(sample_index(PW, ph, pw, iy, ix, gh, gw))
                    mx = T.meta_var(slope_flag(x, W, dt))
                    # The x weights of the forward's table are not zeroed outside the map: this is.
                    my = T.meta_var(slope_flag(y, H, dt) * inside_flag(x, W, dt) * inverse_count(gh, gw, dt))
                    ax = T.meta_var(sample_fraction(pw, ix, gw, PW, dt) - half)
                    put_factors(stab, k, n, mx, my, mx * ax, my * ax)

    @T.macro
    def add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, my, mxa, mya):
        # sums: the bin's sums of each slope times the sample's factors (rows 2, 3), the
        # row's of the flagged slopes (rows 6, 7; `end_row`), g applied per bin.
        for lane in T.vectorized(L):
            sx, sy = T.meta_var(sample_slopes(slab, ys, xs, lane))
            scatter_sample(gslab, gbin[p, lane], ys, xs, lane)
            sums[6, lane] = sums[6, lane] + mx * sx
            sums[7, lane] = sums[7, lane] + my * sy
            sums[2, lane] = sums[2, lane] + mxa * sx
            sums[3, lane] = sums[3, lane] + mya * sy

    @T.macro
    def end_row(sums, ph, iy, gh):
        # A row of samples shares its ay: its flagged slopes' sums go to the bin's, and
        # times ay to the bin's sums of mx*ay*gx and my*ay*gy, then start again.
        ay = T.meta_var(sample_fraction(ph, iy, gh, PH, dt) - half)
        for lane in T.vectorized(L):
            sums[0, lane] = sums[0, lane] + sums[6, lane]
            sums[1, lane] = sums[1, lane] + sums[7, lane]
            sums[4, lane] = sums[4, lane] + ay * sums[6, lane]
            sums[5, lane] = sums[5, lane] + ay * sums[7, lane]
            sums[6, lane] = zero
            sums[7, lane] = zero

    @T.macro
    def box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr, work, H, W):
        gh, gw = T.meta_var(grids(rois, k))
        sums = T.alloc_buffer((8, L), dt)
        for ph, pw in T.grid(PH, PW):
            p = T.meta_var(ph * PW + pw)
            for j in range(8):
                for lane in T.vectorized(L):
                    sums[j, lane] = zero
            if keeps_samples(spec, gh, gw):
                for iy in range(gh):
                    for ix in range(gw):
                        ys, xs, mx, my, mxa, mya = T.meta_var(
                            kept(rois, itab, ftab, stab, k, ph, pw, iy, ix, gh, gw, H, W))
                        add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, my, mxa, mya)
                    end_row(sums, ph, iy, gh)
            else:
                for iy in range(gh):
                    for ix in range(gw):
                        y, x = T.meta_var(geometry.position(rois, ftab, k, ph, pw, iy, ix, gh, gw))
                        ys, xs = T.meta_var(geometry.corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W))
                        mx = T.meta_var(slope_flag(x, W, dt))
                        my = T.meta_var(slope_flag(y, H, dt) * inverse_count(gh, gw, dt))
                        ax = T.meta_var(sample_fraction(pw, ix, gw, PW, dt) - half)
                        add_sample(slab, gslab, gbin, p, sums, ys, xs, mx, my, mx * ax, my * ax)
                    end_row(sums, ph, iy, gh)
            for j in range(6):
                for lane in T.vectorized(L):
                    acc[j, lane] = acc[j, lane] + gbin[p, lane] * sums[j, lane]

    def follows(rois, k, col):
        """1 where the box's size along col follows the box (0 where clamped to 1)."""
        if spec.aligned:
            return one
        return T.if_then_else(rois[k, col + 2] * scale < one, zero, one)

    @T.macro
    def finish(rois, k, total, slots, grad_out, out, grad_rois):
        cos = T.meta_var(T.cos(box.angle(rois, k)))
        sin = T.meta_var(T.sin(box.angle(rois, k)))
        grad_rois[k, 1] = total[0] * scale
        grad_rois[k, 2] = total[1] * scale
        grad_rois[k, 3] = follows(rois, k, 1) * (cos * total[2] - sin * total[3]) * scale
        grad_rois[k, 4] = follows(rois, k, 2) * (sin * total[4] + cos * total[5]) * scale
        grad_rois[k, 5] = (box.extent(rois, k, 2) * (cos * total[4] - sin * total[5])
                           - box.extent(rois, k, 1) * (sin * total[2] + cos * total[3])) * box.factor

    return {"box_slopes": box_slopes,
            **blocked_box_gradient_kernels(spec, lanes, 6, lambda rois, k: one, box_sums, finish,
                                           scatters=True)}


def roi_align_rotated_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, rotated_geometry(spec), **options)


def kernels(spec, schedule) -> dict:
    lanes = schedule.compute_kwargs("backward")["lanes"]
    return {**by_direction(spec, schedule, roi_align_rotated_kernels), **rotated_box_gradient_kernels(spec, lanes)}
