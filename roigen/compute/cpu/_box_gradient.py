"""`backward_boxes` on the CPU: d(loss)/d(boxes), one task per box.

A box's gradient is a reduction over its channels and bins, which one thread
owns, so it is deterministic without atomics.  The kernel reads the caller's map
(NCHW, or NHWC for channels_last), the forward's output and argmax, and the
output's gradient; what one bin adds is the op's `accumulate` macro
(common/integral.py for PrRoIPool, common/sample_gradient.py for RoIAlign), with
the signature

    accumulate(read, rois, k, ph, pw, gh, gw, H, W, value, s, g, scratch, acc)

`read(y, x)` a pixel of the bin's channel, `value` the bin's output, `s` its
argmax (-1 where the op keeps none), `g` its output gradient, `scratch` four
values of scratch, `acc` the box's four sums (x1, y1, x2, y2 in feature-map
units; the kernel scales them).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.signature import dims
from ._layout import map_shape


def box_gradient_kernel(spec, grids, accumulate, active=None) -> tirx.PrimFunc:
    """`grids(rois, k)` -> (gh, gw), box k's samples (or cells) per bin; `active(rois, k)`
    whether box k has a gradient at all (None: every box)."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)
    nchw = spec.layout == "NCHW"
    argmax = bool(spec.aux_outputs)

    N, C, H, W, K, A = dims("N C H W K A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt), rois: T.Buffer((K, 5), dt),
                       out: T.Buffer((K, C, P), dt), aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       grad_rois: T.Buffer((K, 5), dt)):
        for k in T.parallel(K):
            acc = T.alloc_buffer((4,), dt)
            scratch = T.alloc_buffer((4,), dt)
            for j in range(4):
                acc[j] = zero
            n = T.Cast("int64", rois[k, 0])
            if active is None or active(rois, k):
                gh, gw = T.meta_var(grids(rois, k))
                for c, ph, pw in T.grid(C, PH, PW):
                    at = T.meta_var((k * C + c) * P + ph * PW + pw)
                    # The argmax where the op keeps one (A = 0 when the forward kept none: no bin gets a gradient).
                    s = T.meta_var(T.if_then_else(at < A, aux[T.min(at, A - 1)], -1) if argmax else -1)
                    accumulate(lambda y, x: data[n, c, y, x] if nchw else data[n, y, x, c], rois, k, ph, pw,
                               gh, gw, H, W, out[k, c, ph * PW + pw], s, grad_out[k, c, ph * PW + pw], scratch, acc)
            grad_rois[k, 0] = zero
            for j in range(4):
                grad_rois[k, j + 1] = acc[j] * scale

    return backward_boxes
