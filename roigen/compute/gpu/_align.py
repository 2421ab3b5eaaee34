"""The align family on GPUs: roi_align, roi_warp and ps_roi_align (contract in __init__).

forward and backward_atomic run one thread block per (box, bin, channel
chunk): the block's threads take consecutive channels of one bin, so a warp
reads one pixel's channels at a time (coalesced on NHWC), and the bin's
sample geometry is computed once per block into shared-memory tables (up to
`table` samples per axis at a time) instead of once per thread.

The deterministic backward runs one thread per (image, input channel): it
walks every box of its image in order and owns its channel of the gradient,
so no two threads write the same address and no atomics are needed (WGSL has
no float atomics).  Its work is that of the forward; only the parallelism is
smaller (N*C threads).

`aux` (max mode): the winning sample of each bin, iy*gw + ix, or -1.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, interpolate, scatter_macro
from ..common.indexing import unravel
from ..common.sampling import axis_corners, box_rule, sample_grid, sample_pos
from ..common.signature import dims
from ._threads import kernel_set, launch, registers

I32 = "int32"


def roi_align_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    return align_family(spec, sched, *box_rule(spec), position_sensitive=False)


def roi_warp_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    return align_family(spec, sched, *box_rule(spec), position_sensitive=False)


def ps_roi_align_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    return align_family(spec, sched, *box_rule(spec), position_sensitive=True)


def align_family(spec, sched, start, extent, position_sensitive: bool) -> dict[str, tirx.PrimFunc]:
    """Kernels from a box rule: `start`/`extent(rois, k, col)` along x (col 1) or y (col 2).

    Position-sensitive: bin b of output channel c reads input channel c*P + b.
    """
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    TPB = sched.threads
    S = sched.table
    ps = position_sensitive
    avg = getattr(spec, "mode", "avg") == "avg"
    zero = tirx.const(0.0, dt)
    one_i = tirx.const(1, I32)
    assert S <= TPB, "a block's threads fill its sample tables"
    scatter, scatter_atomic = scatter_macro(), scatter_macro(atomic=True)

    def grid(rois, k, col, pooled):
        return sample_grid(extent(rois, k, col), pooled, spec.sampling_ratio, dt, I32)

    def bin_size(rois, k, col, pooled):
        return extent(rois, k, col) / tirx.const(pooled, dt)

    def in_channel(c, b):
        return c * P + b if ps else c

    def count(gh, gw):
        return T.Cast(dt, T.max(gh * gw, one_i))

    def geometry(rois, k):
        """Box k's sample grid (gh, gw), first corner (y0, x0) and bin size (bh, bw)."""
        return (grid(rois, k, 2, PH), grid(rois, k, 1, PW), start(rois, k, 2), start(rois, k, 1),
                bin_size(rois, k, 2, PH), bin_size(rois, k, 1, PW))

    def block_of(blk, t, K, CO):
        """(box, bin, channel) of thread t: blocks run over boxes, bins and chunks of TPB channels."""
        k, b, chunk = unravel(blk, (K, P, (CO + TPB - 1) // TPB))
        return k, b, chunk * TPB + t

    def sample_tables(slots, scope):
        """Corner indices and weights along y, then x, for `slots` samples per axis."""
        return tuple(T.alloc_buffer((2 * slots,), kind, scope=scope) for kind in (I32, dt, I32, dt))

    @T.macro
    def corners(ibuf, fbuf, slot, first, size, g, s, limit):
        """Store sample s's two corner indices and weights along one axis at `slot`."""
        low, high, w_low, w_high = T.meta_var(axis_corners(sample_pos(first, size, g, s, dt), limit, dt, I32))
        ibuf[2 * slot] = low
        ibuf[2 * slot + 1] = high
        fbuf[2 * slot] = w_low
        fbuf[2 * slot + 1] = w_high

    @T.macro
    def fill_tables(yi, yw, xi, xw, t, yc, xc, b, y0, bh, gh, H, x0, bw, gw, W):
        """Chunk (yc, xc) of bin b's shared sample tables, one slot per thread of the
        block's first S, between barriers (every thread of the block reaches them)."""
        T.tvm_storage_sync("shared")
        if t < S:
            if yc * S + t < gh:
                corners(yi, yw, t, y0, bh, gh, b // PW * gh + yc * S + t, H)
            if xc * S + t < gw:
                corners(xi, xw, t, x0, bw, gw, b % PW * gw + xc * S + t, W)
        T.tvm_storage_sync("shared")

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def forward(x: T.Buffer((N, H, W, CI), dt), rois: T.Buffer((K, 5), dt), out: T.Buffer((K, CO, P), dt),
                aux: T.Buffer((A,), I32)):
        blk, t = launch(K * P * ((CO + TPB - 1) // TPB), TPB)
        yi, yw, xi, xw = sample_tables(S, "shared")
        acc, val, arg = registers(dt, dt, I32)
        k, b, c = block_of(blk, t, K, CO)
        n = T.Cast(I32, rois[k, 0])
        gh, gw, y0, x0, bh, bw = geometry(rois, k)
        acc[0] = zero
        arg[0] = -1
        for yc, xc in T.grid((gh + S - 1) // S, (gw + S - 1) // S):
            fill_tables(yi, yw, xi, xw, t, yc, xc, b, y0, bh, gh, H, x0, bw, gw, W)
            if c < CO:
                for iy, ix in T.grid(T.min(S, gh - yc * S), T.min(S, gw - xc * S)):
                    v = T.meta_var(interpolate(lambda y, xx: x[n, y, xx, in_channel(c, b)],
                                               corners_at(yi, yw, 2 * iy), corners_at(xi, xw, 2 * ix)))
                    if avg:
                        acc[0] = acc[0] + v
                    else:
                        # The lowest sample index wins ties, whatever the chunk order.
                        sample = T.meta_var((yc * S + iy) * gw + xc * S + ix)
                        val[0] = v
                        if arg[0] < 0 or val[0] > acc[0] or (val[0] == acc[0] and sample < arg[0]):
                            acc[0] = val[0]
                            arg[0] = sample
        if c < CO:
            if avg:
                out[k, c, b] = acc[0] / count(gh, gw)
            else:
                out[k, c, b] = T.Select(arg[0] < 0, zero, acc[0])
                if A > 0:
                    aux[(k * CO + c) * P + b] = arg[0]

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                 grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch((N * CI + TPB - 1) // TPB, TPB)
        yi, yw, xi, xw = sample_tables(1, "local")
        if blk * TPB + t < N * CI:
            n, ci = unravel(blk * TPB + t, (N, CI))
            c = T.meta_var(ci // P if ps else ci)
            for k in range(K):
                if T.Cast(I32, rois[k, 0]) == n:
                    gh, gw, y0, x0, bh, bw = geometry(rois, k)
                    for bb in range(1 if ps else P):
                        b = T.meta_var(ci % P if ps else bb)
                        if avg:
                            gv = grad[k, c, b] / count(gh, gw)
                            for iy in range(gh):
                                corners(yi, yw, 0, y0, bh, gh, b // PW * gh + iy, H)
                                for ix in range(gw):
                                    corners(xi, xw, 0, x0, bw, gw, b % PW * gw + ix, W)
                                    scatter(grad_input, lambda y, xx: (n, y, xx, ci),
                                            corners_at(yi, yw, 0), corners_at(xi, xw, 0), gv)
                        else:
                            s = aux[(k * CO + c) * P + b]
                            if s >= 0 and s < gh * gw:  # a sample of this bin, whoever forged aux
                                corners(yi, yw, 0, y0, bh, gh, b // PW * gh + s // gw, H)
                                corners(xi, xw, 0, x0, bw, gw, b % PW * gw + s % gw, W)
                                scatter(grad_input, lambda y, xx: (n, y, xx, ci),
                                        corners_at(yi, yw, 0), corners_at(xi, xw, 0), grad[k, c, b])

    (K,) = dims("K", I32)
    @T.prim_func
    def grid_size(rois: T.Buffer((K, 5), dt), sizes: T.Buffer((K, 2), I32)):
        # Each box's adaptive sample grid (gh, gw), for the runtime's limit on it
        # (runtime.check_table): checked before a kernel could loop over it.
        blk, t = launch((K + TPB - 1) // TPB, TPB)
        if blk * TPB + t < K:
            sizes[blk * TPB + t, 0] = grid(rois, blk * TPB + t, 2, PH)
            sizes[blk * TPB + t, 1] = grid(rois, blk * TPB + t, 1, PW)

    # backward with the forward's blocks and sample tables, scattering by atomic adds (CUDA).
    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward_atomic(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                        grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch(K * P * ((CO + TPB - 1) // TPB), TPB)
        yi, yw, xi, xw = sample_tables(S, "shared")
        k, b, c = block_of(blk, t, K, CO)
        n = T.Cast(I32, rois[k, 0])
        gh, gw, y0, x0, bh, bw = geometry(rois, k)
        if avg:
            for yc, xc in T.grid((gh + S - 1) // S, (gw + S - 1) // S):
                fill_tables(yi, yw, xi, xw, t, yc, xc, b, y0, bh, gh, H, x0, bw, gw, W)
                if c < CO:
                    for iy, ix in T.grid(T.min(S, gh - yc * S), T.min(S, gw - xc * S)):
                        scatter_atomic(grad_input, lambda y, xx: (n, y, xx, in_channel(c, b)),
                                       corners_at(yi, yw, 2 * iy), corners_at(xi, xw, 2 * ix),
                                       grad[k, c, b] / count(gh, gw))
        else:
            # Max mode touches one sample per thread: no tables to share.
            yl, ylw, xl, xlw = sample_tables(1, "local")
            if c < CO:
                s = aux[(k * CO + c) * P + b]
                if s >= 0 and s < gh * gw:
                    corners(yl, ylw, 0, y0, bh, gh, b // PW * gh + s // gw, H)
                    corners(xl, xlw, 0, x0, bw, gw, b % PW * gw + s % gw, W)
                    scatter_atomic(grad_input, lambda y, xx: (n, y, xx, in_channel(c, b)),
                                   corners_at(yl, ylw, 0), corners_at(xl, xlw, 0), grad[k, c, b])

    kernels = kernel_set(sched, forward, backward, backward_atomic)
    if spec.sampling_ratio <= 0:
        kernels["grid_size"] = grid_size
    return kernels
