"""`backward_boxes` on the CPU: d(loss)/d(boxes), one task per box.

A box's gradient is a reduction over its channels and bins, which one thread
owns, so it is deterministic without atomics.  The kernel reads the caller's map
(NCHW, or NHWC for channels_last), the forward's output and argmax, and the
output's gradient; what one bin adds is the op's `accumulate` macro
(common/integral.py for PrRoIPool, common/sample_gradient.py for RoIAlign), with
the signature

    accumulate(read, rois, k, ph, pw, gh, gw, H, W, c0, c1, value, argmax, grad, sums, acc)

over channels [c0, c1) of bin (ph, pw) of box k: `read(c, y, x)` a pixel of
channel c, `value(c)` the bin's output, `argmax(c)` its winning sample (-1 where
the op keeps none), `grad(c)` its output gradient; `sums` eight values of
scratch, `acc` the box's sums, one per coordinate (in feature-map units and
radians; the kernel scales them to the box's own: common/rotated.py).  Every bin
of a box, all its channels at once: the macros keep the channel loops innermost,
so a sample's geometry is found once.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import interpolate
from ..common.rotated import box_gradient_scales
from ..common.signature import dims
from ._layout import map_shape


def box_gradient_kernel(spec, grids, accumulate, active=None) -> tirx.PrimFunc:
    """`grids(rois, k)` -> (gh, gw), box k's samples (or cells) per bin; `active(rois, k)`
    whether box k has a gradient at all (None: every box)."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    BOX = spec.box_columns
    scale_of = box_gradient_scales(spec)
    zero = tirx.const(0.0, dt)
    nchw = spec.layout == "NCHW"

    N, C, H, W, K, A = dims("N C H W K A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt), rois: T.Buffer((K, BOX), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, BOX), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((BOX - 1,), dt)
            sums = T.alloc_buffer((8,), dt)
            for j in range(BOX - 1):
                acc[j] = zero
            n = T.Cast("int64", rois[k, 0])
            if active is None or active(rois, k):
                gh, gw = T.meta_var(grids(rois, k))
                for ph, pw in T.grid(PH, PW):
                    b = T.meta_var(ph * PW + pw)
                    # The argmax where the op keeps one (A = 0 when the forward kept none: no bin gets a gradient).
                    accumulate(lambda c, y, x: data[n, c, y, x] if nchw else data[n, y, x, c], rois, k, ph, pw,
                               gh, gw, H, W, 0, C, lambda c: out[k, c, b],
                               lambda c: T.if_then_else((k * C + c) * P + b < A, aux[T.min((k * C + c) * P + b, A - 1)],
                                                        -1),
                               lambda c: grad_out[k, c, b], sums, acc)
            grad_rois[k, 0] = zero
            for j in range(BOX - 1):
                grad_rois[k, j + 1] = acc[j] * scale_of(j)

    return backward_boxes


def packed_sample_box_gradient_kernel(spec, lanes: int, grids, sample) -> tirx.PrimFunc:
    """`backward_boxes` of an op that averages bilinear samples (RoIAlign, rotated RoIAlign),
    on the map packed in channel blocks (N, Cb, H, W, L) by `box_pack` (this signature, `out`
    and `aux` unused): one task per box; each sample's geometry found once into scalars,
    its slopes summed over L channels at a time in vector registers, the lanes added at
    the end of the box.

    `sample(rois, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, y slopes, x slopes, u, v):
    the sample's corners and weights along each axis (common/sampling.py), the slopes of
    those weights (common/sample_gradient.py), and per box coordinate j, how the
    coordinate's sum moves with the sample's x and y gradients: acc[j] += gx*u[j] + gy*v[j].
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    L = lanes
    BOX = spec.box_columns
    scale_of = box_gradient_scales(spec)
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)

    @T.macro
    def keep(corner, weight, ys, xs, sy, sx, u, v):
        # The sample's geometry, into scalars the channel loop reads: corners (y0, y1, x0, x1);
        # weights along y and x, their slopes; then u and v per coordinate.
        corner[0] = ys[0]
        corner[1] = ys[1]
        corner[2] = xs[0]
        corner[3] = xs[1]
        weight[0] = ys[2]
        weight[1] = ys[3]
        weight[2] = xs[2]
        weight[3] = xs[3]
        weight[4] = sy[2]
        weight[5] = sy[3]
        weight[6] = sx[2]
        weight[7] = sx[3]
        for j in T.unroll(BOX - 1):
            weight[8 + j] = _pick(u, j)
            weight[8 + BOX - 1 + j] = _pick(v, j)

    def axis(corner, weight, first, base):
        return corner[first], corner[first + 1], weight[base], weight[base + 1]

    N, Cb, H, W, K, C, A = dims("N Cb H W K C A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer((N, Cb, H, W, L), dt), rois: T.Buffer((K, BOX), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, BOX), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((BOX - 1, L), dt)
            sums = T.alloc_buffer((2, L), dt)
            gbin = T.alloc_buffer((Cb, L), dt)  # the bin's output gradient / count, by channel block
            corner = T.alloc_buffer((4,), "int64")
            weight = T.alloc_buffer((8 + 2 * (BOX - 1),), dt)
            for j, lane in T.grid(BOX - 1, L):
                acc[j, lane] = zero
            n = T.Cast("int64", rois[k, 0])
            gh, gw = T.meta_var(grids(rois, k))
            for ph, pw in T.grid(PH, PW):
                for cb, lane in T.grid(Cb, L):
                    gbin[cb, lane] = T.if_then_else(
                        cb * L + lane < C, grad_out[k, T.min(cb * L + lane, C - 1), ph * PW + pw], zero
                    ) * (one / T.Cast(dt, T.max(gh * gw, T.int64(1))))
                for iy, ix in T.grid(gh, gw):
                    keep(corner, weight, *sample(rois, k, ph, pw, iy, ix, gh, gw, H, W))
                    for lane in T.vectorized(L):
                        sums[0, lane] = zero
                        sums[1, lane] = zero
                    for cb in range(Cb):
                        for lane in T.vectorized(L):
                            # (sum g * dv/dx, sum g * dv/dy)
                            sums[0, lane] = sums[0, lane] + gbin[cb, lane] * interpolate(
                                lambda y, x: data[n, cb, y, x, lane], axis(corner, weight, 0, 0),
                                axis(corner, weight, 2, 6))
                            sums[1, lane] = sums[1, lane] + gbin[cb, lane] * interpolate(
                                lambda y, x: data[n, cb, y, x, lane], axis(corner, weight, 0, 4),
                                axis(corner, weight, 2, 2))
                    for j in range(BOX - 1):
                        for lane in T.vectorized(L):
                            acc[j, lane] = (acc[j, lane] + sums[0, lane] * weight[8 + j]
                                            + sums[1, lane] * weight[8 + BOX - 1 + j])
            grad_rois[k, 0] = zero
            for j in range(BOX - 1):
                grad_rois[k, j + 1] = zero
                for lane in range(L):
                    grad_rois[k, j + 1] = grad_rois[k, j + 1] + acc[j, lane]
                grad_rois[k, j + 1] = grad_rois[k, j + 1] * scale_of(j)

    return backward_boxes


def _pick(values, j):
    """values[j] for a loop variable j over a short Python list of expressions."""
    chosen = values[-1]
    for i in range(len(values) - 2, -1, -1):
        chosen = tirx.Select(j == i, values[i], chosen)
    return chosen
