"""R-FCN's position-sensitive pooling as TIR: ps_roi_align and ps_roi_pool.

Output bin (ph, pw) of channel c reads input channel (c*PH + ph)*PW + pw, so
one output channel's bins read PH*PW different planes and channel blocks
would not vectorise; these kernels read contiguous NCHW directly (no packing,
whose cost would exceed the whole op), one scalar per sample.

Every input plane feeds exactly one output bin of one channel, so both
directions run one task per (image, input plane): the plane (H*W values)
stays in cache while every box of that image samples it, the map is read
once, and in backward the task owns its plane of the gradient (no atomics,
deterministic).  (Forward speed measured the same box by box; the scalar
corner loads dominate either way.)

These ops keep no argmax; their kernels still take the (empty) aux buffer of
the family's calling convention (backends/llvm.py: Kernels).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, interpolate, scatter_macro
from ..common.indexing import unravel
from ..common.sampling import box_rule, pool_edge
from ..common.signature import dims
from ._align import align_tables


def bin_of(plane, PH: int, PW: int) -> tuple:
    """Input channel `plane` feeds bin (ph, pw) of output channel plane // (PH*PW)."""
    return (plane % (PH * PW)) // PW, plane % PW


def ps_roi_align_kernels(spec) -> dict[str, tirx.PrimFunc]:
    """torchvision's ps_roi_align: aligned (half-pixel) boxes with no minimum size."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    zero = tirx.const(0.0, dt)
    geometry = align_tables(spec, *box_rule(spec))
    grids, table_kernels = geometry.grids, geometry.kernels
    scatter = scatter_macro()

    N, C, H, W, K, S, A = dims("N C H W K S A", "int64")
    @T.prim_func
    def forward(data: T.Buffer((N, C, H, W), dt), rois: T.Buffer((K, 5), dt), itab: T.Buffer((K, S), "int32"),
                ftab: T.Buffer((K, S), dt), out: T.Buffer((K, C // P, P), dt), aux: T.Buffer((A,), "int32")):
        for task in T.parallel(N * C):
            n, plane = unravel(task, (N, C))
            ph, pw = bin_of(plane, PH, PW)
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    gh = T.meta_var(grids(rois, k)[0])
                    gw = T.meta_var(grids(rois, k)[1])
                    acc = T.alloc_buffer((1,), dt)
                    acc[0] = zero
                    for iy, ix in T.grid(gh, gw):
                        sy = 2 * (ph * gh + iy)
                        sx = 2 * PH * gh + 2 * (pw * gw + ix)
                        # data[n, plane, 0, row*W + col] addresses pixel (row, col).
                        acc[0] = interpolate(lambda y, x: data[n, plane, 0, T.Cast("int64", y + x)],
                                             corners_at(itab, ftab, k, sy), corners_at(itab, ftab, k, sx), acc[0])
                    out[k, plane // P, plane % P] = acc[0]

    N, C, H, W, K, S, A = dims("N C H W K S A", "int64")
    @T.prim_func
    def backward(grad_out: T.Buffer((K, C // P, P), dt), rois: T.Buffer((K, 5), dt),
                 itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt), aux: T.Buffer((A,), "int32"),
                 grad: T.Buffer((N, C, H, W), dt)):
        for task in T.parallel(N * C):
            n, plane = unravel(task, (N, C))
            ph, pw = bin_of(plane, PH, PW)
            for h, w in T.grid(H, W):
                grad[n, plane, h, w] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    gh = T.meta_var(grids(rois, k)[0])
                    gw = T.meta_var(grids(rois, k)[1])
                    gv = grad_out[k, plane // P, plane % P]
                    for iy, ix in T.grid(gh, gw):
                        sy = 2 * (ph * gh + iy)
                        sx = 2 * PH * gh + 2 * (pw * gw + ix)
                        scatter(grad, lambda y, x: (n, plane, 0, T.Cast("int64", y + x)),
                                corners_at(itab, ftab, k, sy), corners_at(itab, ftab, k, sx), gv)

    return {**table_kernels, "forward": forward, "backward": backward}


def ps_roi_pool_kernels(spec) -> dict[str, tirx.PrimFunc]:
    """torchvision's ps_roi_pool: the *average* of each bin of a snapped box (size >= 1, no +1).

    torchvision's forward clips bins to [0, H-1) x [0, W-1) (the map's last
    row and column never count) while its backward clips to [0, H) x [0, W).
    We match its forward exactly and take the true gradient of that forward,
    so gradients differ from torchvision's only for bins touching the last
    row or column.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)

    def bounds(rois, k, plane, H, W):
        """Input channel plane's bin of box k as [hs, he) x [ws, we), clipped to [0, H-1) x [0, W-1)."""
        def edge(col, pooled, index, rounding, limit):
            return pool_edge(rois, k, col, scale, False, pooled, index, rounding, limit, dt)
        ph, pw = bin_of(plane, PH, PW)
        return (edge(2, PH, ph, T.floor, H - 1), edge(2, PH, ph + 1, T.ceil, H - 1),
                edge(1, PW, pw, T.floor, W - 1), edge(1, PW, pw + 1, T.ceil, W - 1))

    def area(hs, he, ws, we):
        return T.Cast(dt, (he - hs) * (we - ws))

    N, C, H, W, K, A = dims("N C H W K A", "int64")
    @T.prim_func
    def forward(data: T.Buffer((N, C, H, W), dt), rois: T.Buffer((K, 5), dt),
                out: T.Buffer((K, C // P, P), dt), aux: T.Buffer((A,), "int32")):
        for task in T.parallel(N * C):
            n, plane = unravel(task, (N, C))
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    hs, he, ws, we = bounds(rois, k, plane, H, W)
                    acc = T.alloc_buffer((1,), dt)
                    acc[0] = zero
                    for h, w in T.grid(he - hs, we - ws):
                        acc[0] = acc[0] + data[n, plane, hs + h, ws + w]
                    out[k, plane // P, plane % P] = T.if_then_else(
                        he <= hs or we <= ws, zero, acc[0] / area(hs, he, ws, we))

    N, C, H, W, K, A = dims("N C H W K A", "int64")
    @T.prim_func
    def backward(grad_out: T.Buffer((K, C // P, P), dt), rois: T.Buffer((K, 5), dt),
                 aux: T.Buffer((A,), "int32"), grad: T.Buffer((N, C, H, W), dt)):
        for task in T.parallel(N * C):
            n, plane = unravel(task, (N, C))
            for h, w in T.grid(H, W):
                grad[n, plane, h, w] = zero
            for k in range(K):
                if T.Cast("int64", rois[k, 0]) == n:
                    hs, he, ws, we = bounds(rois, k, plane, H, W)
                    if he > hs and we > ws:
                        gv = grad_out[k, plane // P, plane % P] / area(hs, he, ws, we)
                        for h, w in T.grid(he - hs, we - ws):
                            grad[n, plane, hs + h, ws + w] += gv

    return {"forward": forward, "backward": backward}
