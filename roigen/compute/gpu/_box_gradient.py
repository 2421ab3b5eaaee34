"""`backward_boxes` on GPUs: d(loss)/d(boxes), one block per box.

The block's threads take the box's (channel, bin) pairs in turn, each keeping
its own partial sums (one per box coordinate); the block's first thread adds the partials in thread
order.  No atomics (WGSL has no float atomics), and the same bits on every run.
What one bin adds is the op's `accumulate` macro (common/sample_gradient.py,
common/rotated.py, common/integral.py), with the signature

    accumulate(read, rois, k, ph, pw, gh, gw, H, W, c0, c1, value, argmax, grad, sums, acc)

over channels [c0, c1) of bin (ph, pw) of box k (here one channel, the thread's):
`read(c, y, x)` a pixel of channel c, `value(c)` the bin's output, `argmax(c)` its
winning sample (-1 where the op keeps none), `grad(c)` its output gradient; `sums`
eight values of scratch, `acc` the box's sums, one per coordinate (in feature-map
units and radians; the kernel scales them to the box's own: common/rotated.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.rotated import box_gradient_scales
from ..common.signature import dims
from ._sampled import grid_macro
from ._threads import launch

I32 = "int32"


def box_gradient_kernel(spec, sched, grids, accumulate, active=None) -> tirx.PrimFunc:
    """`grids(rois, k)` -> (gh, gw) in int32; `active(rois, k)` whether box k has a gradient
    at all (None: every box)."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    TPB = sched.threads
    BOX = spec.box_columns
    scale_of = box_gradient_scales(spec)
    fill_grid = grid_macro(grids)
    block_total = block_total_macro(dt, TPB, BOX - 1)
    zero = tirx.const(0.0, dt)

    N, H, W, C, K, A = dims("N H W C K A", I32)
    @T.prim_func
    def backward_boxes(x: T.Buffer((N, H, W, C), dt), rois: T.Buffer((K, BOX), dt), out: T.Buffer((K, C, P), dt),
                       aux: T.Buffer((A,), I32), grad_out: T.Buffer((K, C, P), dt), grad_rois: T.Buffer((K, BOX), dt)):
        k, t = launch(K, TPB)
        partial = T.alloc_buffer((TPB * (BOX - 1),), dt, scope="shared")
        acc = T.alloc_buffer((BOX - 1,), dt, scope="local")
        sums = T.alloc_buffer((8,), dt, scope="local")
        for j in range(BOX - 1):
            acc[j] = zero
        grid = T.alloc_buffer((2,), I32, scope="local")  # held, not written out at every use (bilinear.hold_macro)
        n = T.Cast(I32, rois[k, 0])
        if active is None or active(rois, k):
            fill_grid(grid, rois, k)
            gh, gw = T.meta_var((grid[0], grid[1]))
            for i in range((C * P + TPB - 1) // TPB):
                if i * TPB + t < C * P:
                    c, b = T.meta_var(unravel(i * TPB + t, (C, P)))
                    at = T.meta_var(k * C * P + i * TPB + t)
                    # This thread's channel of the bin.  The argmax where the op keeps one (A = 0
                    # when the forward kept none: no bin gets a gradient).
                    accumulate(lambda _, y, xx: x[n, y, xx, c], rois, k, b // PW, b % PW, gh, gw, H, W, c, c + 1,
                               lambda _: out[k, c, b], lambda _: T.if_then_else(at < A, aux[T.min(at, A - 1)], -1),
                               lambda _: grad_out[k, c, b], sums, acc)
        block_total(partial, acc, t, grad_rois, k, scale_of)

    return backward_boxes


def block_total_macro(dt: str, threads: int, count: int):
    """A macro `total(partial, acc, t, grad_rois, k, scale_of)`: thread t's `count` sums (acc)
    through `partial` (shared, threads * count), added by the block's first thread in thread
    order, into row k of grad_rois: column j + 1 gets sum j times `scale_of(j)`, column 0 (the
    batch index) 0.  No atomics, and the same bits on every run."""
    zero = tirx.const(0.0, dt)

    @T.macro
    def total(partial, acc, t, grad_rois, k, scale_of):
        for j in range(count):
            partial[t * count + j] = acc[j]
        T.tvm_storage_sync("shared")
        if t == 0:
            for j in range(count):
                acc[j] = zero
            for s in range(threads):
                for j in range(count):
                    acc[j] = acc[j] + partial[s * count + j]
            grad_rois[k, 0] = zero
            for j in range(count):
                grad_rois[k, j + 1] = acc[j] * scale_of(j)

    return total
