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
from ..common.sampling import axis_corners, box_rule, sample_grid, sample_pos

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

    @T.prim_func
    def forward(x_h: T.handle, r_h: T.handle, o_h: T.handle, a_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int32()
        H = T.int32()
        W = T.int32()
        CI = T.int32()
        K = T.int32()
        CO = T.int32()
        A = T.int32()
        x = T.match_buffer(x_h, (N, H, W, CI), dt)
        rois = T.match_buffer(r_h, (K, 5), dt)
        out = T.match_buffer(o_h, (K, CO, P), dt)
        aux = T.match_buffer(a_h, (A,), I32)
        for blk in T.thread_binding(K * P * ((CO + TPB - 1) // TPB), thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                yi = T.alloc_buffer((2 * S,), I32, scope="shared")
                yw = T.alloc_buffer((2 * S,), dt, scope="shared")
                xi = T.alloc_buffer((2 * S,), I32, scope="shared")
                xw = T.alloc_buffer((2 * S,), dt, scope="shared")
                acc = T.alloc_buffer((1,), dt, scope="local")
                val = T.alloc_buffer((1,), dt, scope="local")
                arg = T.alloc_buffer((1,), I32, scope="local")
                k = blk // (P * ((CO + TPB - 1) // TPB))
                b = blk // ((CO + TPB - 1) // TPB) % P
                c = blk % ((CO + TPB - 1) // TPB) * TPB + t
                n = T.Cast(I32, rois[k, 0])
                gh = grid(rois, k, 2, PH)
                gw = grid(rois, k, 1, PW)
                y0 = start(rois, k, 2)
                x0 = start(rois, k, 1)
                bh = bin_size(rois, k, 2, PH)
                bw = bin_size(rois, k, 1, PW)
                acc[0] = zero
                arg[0] = -1
                for yc in range((gh + S - 1) // S):
                    for xc in range((gw + S - 1) // S):
                        fill_tables(yi, yw, xi, xw, t, yc, xc, b, y0, bh, gh, H, x0, bw, gw, W)
                        if c < CO:
                            for iy in range(T.min(S, gh - yc * S)):
                                for ix in range(T.min(S, gw - xc * S)):
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

    @T.prim_func
    def backward(g_h: T.handle, r_h: T.handle, a_h: T.handle, gi_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int32()
        H = T.int32()
        W = T.int32()
        CI = T.int32()
        K = T.int32()
        CO = T.int32()
        A = T.int32()
        grad = T.match_buffer(g_h, (K, CO, P), dt)
        rois = T.match_buffer(r_h, (K, 5), dt)
        aux = T.match_buffer(a_h, (A,), I32)
        grad_input = T.match_buffer(gi_h, (N, H, W, CI), dt)
        for blk in T.thread_binding((N * CI + TPB - 1) // TPB, thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                yi = T.alloc_buffer((2,), I32, scope="local")
                yw = T.alloc_buffer((2,), dt, scope="local")
                xi = T.alloc_buffer((2,), I32, scope="local")
                xw = T.alloc_buffer((2,), dt, scope="local")
                if blk * TPB + t < N * CI:
                    n = (blk * TPB + t) // CI
                    ci = (blk * TPB + t) % CI
                    c = T.meta_var(ci // P if ps else ci)
                    for k in range(K):
                        if T.Cast(I32, rois[k, 0]) == n:
                            gh = grid(rois, k, 2, PH)
                            gw = grid(rois, k, 1, PW)
                            y0 = start(rois, k, 2)
                            x0 = start(rois, k, 1)
                            bh = bin_size(rois, k, 2, PH)
                            bw = bin_size(rois, k, 1, PW)
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

    @T.prim_func
    def grid_size(r_h: T.handle, g_h: T.handle):
        # Each box's adaptive sample grid (gh, gw), for the runtime's limit on it
        # (runtime.check_table): checked before a kernel could loop over it.
        T.func_attr({"tirx.noalias": True})
        K = T.int32()
        rois = T.match_buffer(r_h, (K, 5), dt)
        sizes = T.match_buffer(g_h, (K, 2), I32)
        for blk in T.thread_binding((K + TPB - 1) // TPB, thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                if blk * TPB + t < K:
                    sizes[blk * TPB + t, 0] = grid(rois, blk * TPB + t, 2, PH)
                    sizes[blk * TPB + t, 1] = grid(rois, blk * TPB + t, 1, PW)

    kernels = {"forward": forward, "backward": backward}
    if spec.sampling_ratio <= 0:
        kernels["grid_size"] = grid_size
    if not sched.atomics:
        return kernels

    # backward with the forward's blocks and sample tables, scattering by atomic adds (CUDA).
    @T.prim_func
    def backward_atomic(g_h: T.handle, r_h: T.handle, a_h: T.handle, gi_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int32()
        H = T.int32()
        W = T.int32()
        CI = T.int32()
        K = T.int32()
        CO = T.int32()
        A = T.int32()
        grad = T.match_buffer(g_h, (K, CO, P), dt)
        rois = T.match_buffer(r_h, (K, 5), dt)
        aux = T.match_buffer(a_h, (A,), I32)
        grad_input = T.match_buffer(gi_h, (N, H, W, CI), dt)
        for blk in T.thread_binding(K * P * ((CO + TPB - 1) // TPB), thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                yi = T.alloc_buffer((2 * S,), I32, scope="shared")
                yw = T.alloc_buffer((2 * S,), dt, scope="shared")
                xi = T.alloc_buffer((2 * S,), I32, scope="shared")
                xw = T.alloc_buffer((2 * S,), dt, scope="shared")
                k = blk // (P * ((CO + TPB - 1) // TPB))
                b = blk // ((CO + TPB - 1) // TPB) % P
                c = blk % ((CO + TPB - 1) // TPB) * TPB + t
                n = T.Cast(I32, rois[k, 0])
                gh = grid(rois, k, 2, PH)
                gw = grid(rois, k, 1, PW)
                y0 = start(rois, k, 2)
                x0 = start(rois, k, 1)
                bh = bin_size(rois, k, 2, PH)
                bw = bin_size(rois, k, 1, PW)
                if avg:
                    for yc in range((gh + S - 1) // S):
                        for xc in range((gw + S - 1) // S):
                            fill_tables(yi, yw, xi, xw, t, yc, xc, b, y0, bh, gh, H, x0, bw, gw, W)
                            if c < CO:
                                for iy in range(T.min(S, gh - yc * S)):
                                    for ix in range(T.min(S, gw - xc * S)):
                                        scatter_atomic(grad_input, lambda y, xx: (n, y, xx, in_channel(c, b)),
                                                       corners_at(yi, yw, 2 * iy), corners_at(xi, xw, 2 * ix),
                                                       grad[k, c, b] / count(gh, gw))
                else:
                    # Max mode touches one sample per thread: no tables to share.
                    yl = T.alloc_buffer((2,), I32, scope="local")
                    ylw = T.alloc_buffer((2,), dt, scope="local")
                    xl = T.alloc_buffer((2,), I32, scope="local")
                    xlw = T.alloc_buffer((2,), dt, scope="local")
                    if c < CO:
                        s = aux[(k * CO + c) * P + b]
                        if s >= 0 and s < gh * gw:
                            corners(yl, ylw, 0, y0, bh, gh, b // PW * gh + s // gw, H)
                            corners(xl, xlw, 0, x0, bw, gw, b % PW * gw + s % gw, W)
                            scatter_atomic(grad_input, lambda y, xx: (n, y, xx, in_channel(c, b)),
                                           corners_at(yl, ylw, 0), corners_at(xl, xlw, 0), grad[k, c, b])

    kernels["backward_atomic"] = backward_atomic
    return kernels
