"""RoIAlign in rotated boxes on the CPU: the align family's kernels (`_align.py`) with a
rotated sample geometry.

A box with few enough samples (limits.keeps_samples) keeps every sample's corners in its
tables (`_align.sample_table_macro`): they are found once per box, not once per channel
block.  Beyond that: a rotated sample is no longer a row sample times a column sample, but its
position is still a sum of one term per axis: y = (yy*cos - xx*sin) + cy with
yy from the bin row and xx from the bin column (common/rotated.py).  So a box's
tables keep roi_align's size, 2 * (PH*gh + PW*gw): each row sample holds
(yy*cos, yy*sin), each column sample (xx*sin, xx*cos), and a kernel adds the
two and finds the sample's corners as it reads it (itab is unused, filled with 0:
pixel offsets that are in the map, as every table's).  `backward_boxes`: one task per
box on the packed map (_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...limits import keeps_samples
from ..common.rotated import RotatedBoxes, rotated_sample_gradient
from ..common.sampling import axis_corners
from ..common.signature import dims
from . import _box_gradient, by_direction
from ._align import Geometry, align_family_kernels, sample_table_macro, table_size_of

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def rotated_geometry(spec) -> Geometry:
    dt = spec.compute_dtype

    def _corners(y, x, gh, gw, H, W):
        inv = tirx.const(1.0, dt) / T.Cast(dt, T.max(gh * gw, tirx.const(1, "int64")))
        y0, y1, wy0, wy1 = axis_corners(y, H, dt)
        return (y0 * W, y1 * W, wy0 * inv, wy1 * inv), axis_corners(x, W, dt)

    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)

    def grids(rois, k):
        return box.grid(rois, k, 2, PH), box.grid(rois, k, 1, PW)

    def sample(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        # A sample's corners from the box itself (the per-sample tables' entries).
        yy = box.offset_in_box(rois, k, 2, PH, gh, ph * gh + iy)
        xx = box.offset_in_box(rois, k, 1, PW, gw, pw * gw + ix)
        t = box.angle(rois, k)
        y, x = box.onto_map(yy, xx, T.cos(t), T.sin(t), box.centre(rois, k, 2), box.centre(rois, k, 1))
        return _corners(y, x, gh, gw, H, W)

    fill_samples = sample_table_macro(spec, sample)

    (K,) = dims("K", "int64")
    @T.prim_func
    def table_size(rois: T.Buffer((K, 6), dt), size: T.Buffer((1,), "int64")):
        size[0] = T.int64(1)
        for k in range(K):
            size[0] = T.max(size[0], table_size_of(spec, grids(rois, k)[0], grids(rois, k)[1]))

    K, S = dims("K S", "int64")
    @T.prim_func
    def tables(rois: T.Buffer((K, 6), dt), itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt),
               H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh = T.meta_var(grids(rois, k)[0])
            gw = T.meta_var(grids(rois, k)[1])
            cos = T.meta_var(T.cos(box.angle(rois, k)))
            sin = T.meta_var(T.sin(box.angle(rois, k)))
            if keeps_samples(spec, gh, gw):
                fill_samples(rois, itab, ftab, k, gh, gw, H, W)
            else:
                for s in range(PH * gh):
                    yy = T.meta_var(box.offset_in_box(rois, k, 2, PH, gh, s))
                    ftab[k, 2 * s] = yy * cos
                    ftab[k, 2 * s + 1] = yy * sin
                    itab[k, 2 * s] = 0
                    itab[k, 2 * s + 1] = 0
                for s in range(PW * gw):
                    xx = T.meta_var(box.offset_in_box(rois, k, 1, PW, gw, s))
                    ftab[k, 2 * PH * gh + 2 * s] = xx * sin
                    ftab[k, 2 * PH * gh + 2 * s + 1] = xx * cos
                    itab[k, 2 * PH * gh + 2 * s] = 0
                    itab[k, 2 * PH * gh + 2 * s + 1] = 0

    def corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W):
        r = 2 * (ph * gh + iy)
        c = 2 * PH * gh + 2 * (pw * gw + ix)
        y = ftab[k, r] - ftab[k, c] + box.centre(rois, k, 2)
        x = ftab[k, r + 1] + ftab[k, c + 1] + box.centre(rois, k, 1)
        return _corners(y, x, gh, gw, H, W)

    return Geometry(grids, {"table_size": table_size, "tables": tables}, corners, per_sample=True)


def roi_align_rotated_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, rotated_geometry(spec), **options)


def kernels(spec, schedule) -> dict:
    PH, PW = spec.pooled_size
    box = RotatedBoxes(spec)
    lanes = schedule.compute_kwargs("backward")["lanes"]
    box_gradient = _box_gradient.packed_sample_box_gradient_kernel(
        spec, lanes, lambda rois, k: (box.grid(rois, k, 2, PH), box.grid(rois, k, 1, PW)),
        rotated_sample_gradient(spec))
    return {**by_direction(spec, schedule, roi_align_rotated_kernels),
            "box_pack": _box_gradient.box_pack_kernel(spec, lanes), "backward_boxes": box_gradient}
