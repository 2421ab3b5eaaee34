"""Deformable RoI pooling on the CPU: the align family's kernels (`_align.py`) with each bin's
samples shifted by the box's offsets (common/deform.py).

A box with few enough samples (limits.keeps_samples) keeps every sample's corners in its
tables (`_align.sample_table_macro`).  Beyond that, a shifted sample is still a sum of one
term per axis and one per bin: its base position along y depends on (ph, iy) alone, so the
box's tables keep roi_align's size, 2 * (PH*gh + PW*gw), holding base positions (itab unused,
filled with 0); a kernel adds the bin's shift and finds the sample's corners as it reads it,
as rotated boxes do.
`backward_boxes` (corners and offsets): one task per box on the packed map (_box_gradient.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...limits import keeps_samples
from ..common.deform import DeformBoxes, deform_sample_gradient
from ..common.sampling import axis_corners
from ..common.signature import dims
from . import _box_gradient, by_direction
from ._align import Geometry, align_family_kernels, sample_table_macro, table_size_of

OPTIONS = {"forward": ("fuse", "shuffle"), "backward": ("fuse",)}


def deform_geometry(spec) -> Geometry:
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    ROW = spec.row_columns
    box = DeformBoxes(spec)

    def grids(rois, k):
        return box.grid(rois, k, 2), box.grid(rois, k, 1)

    def at(y, x, gh, gw, H, W):
        inv = tirx.const(1.0, dt) / T.Cast(dt, T.max(gh * gw, tirx.const(1, "int64")))
        y0, y1, wy0, wy1 = axis_corners(y, H, dt)
        return (y0 * W, y1 * W, wy0 * inv, wy1 * inv), axis_corners(x, W, dt)

    def sample(rois, k, ph, pw, iy, ix, gh, gw, H, W):
        # A sample's corners from the box itself (the per-sample tables' entries).
        return at(box.position(rois, k, 2, ph, pw, iy, gh), box.position(rois, k, 1, ph, pw, ix, gw), gh, gw, H, W)

    fill_samples = sample_table_macro(spec, sample)

    (K,) = dims("K", "int64")
    @T.prim_func
    def table_size(rois: T.Buffer((K, ROW), dt), size: T.Buffer((1,), "int64")):
        size[0] = T.int64(1)
        for k in range(K):
            size[0] = T.max(size[0], table_size_of(spec, grids(rois, k)[0], grids(rois, k)[1]))

    K, S = dims("K S", "int64")
    @T.prim_func
    def tables(rois: T.Buffer((K, ROW), dt), itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt),
               H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh = T.meta_var(grids(rois, k)[0])
            gw = T.meta_var(grids(rois, k)[1])
            if keeps_samples(spec, gh, gw):
                fill_samples(rois, itab, ftab, k, gh, gw, H, W)
            else:
                for s in range(PH * gh):
                    # The position less the bin's start (the box's, shifted), which the kernels add.
                    ftab[k, 2 * s] = box.base(rois, k, 2, s, gh)
                    ftab[k, 2 * s + 1] = tirx.const(0.0, dt)
                    itab[k, 2 * s] = 0
                    itab[k, 2 * s + 1] = 0
                for s in range(PW * gw):
                    ftab[k, 2 * PH * gh + 2 * s] = box.base(rois, k, 1, s, gw)
                    ftab[k, 2 * PH * gh + 2 * s + 1] = tirx.const(0.0, dt)
                    itab[k, 2 * PH * gh + 2 * s] = 0
                    itab[k, 2 * PH * gh + 2 * s + 1] = 0

    def corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W):
        y = box.bin_start(rois, k, 2, ph, pw) + ftab[k, 2 * (ph * gh + iy)]
        x = box.bin_start(rois, k, 1, ph, pw) + ftab[k, 2 * PH * gh + 2 * (pw * gw + ix)]
        return at(y, x, gh, gw, H, W)

    return Geometry(grids, {"table_size": table_size, "tables": tables}, corners, per_sample=True)


def deform_roi_pool_kernels(spec, lanes: int, **options) -> dict[str, tirx.PrimFunc]:
    return align_family_kernels(spec, lanes, deform_geometry(spec), **options)


def kernels(spec, schedule) -> dict:
    box = DeformBoxes(spec)
    lanes = schedule.compute_kwargs("backward")["lanes"]
    sample, bin_scales = deform_sample_gradient(spec)
    box_gradient = _box_gradient.packed_sample_box_gradient_kernel(
        spec, lanes, lambda rois, k: (box.grid(rois, k, 2), box.grid(rois, k, 1)), sample, bin_scales)
    return {**by_direction(spec, schedule, deform_roi_pool_kernels),
            "box_pack": _box_gradient.box_pack_kernel(spec, lanes), "backward_boxes": box_gradient}
