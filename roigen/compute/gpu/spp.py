"""Spatial pyramid pooling over the whole map on GPUs (contract in __init__).

Level n splits the map into n x n adaptive bins, bin i spanning rows
[floor(i*H/n), ceil((i+1)*H/n)).  out (N, D): per level, C channels of n*n
bins.  `aux` (max mode): each bin's first maximum as h*W + w.

The backward gathers instead of scattering: one thread per input element
sums the gradient of the few bins that contain it (rows i in
[floor(y*n/H), ceil((y+1)*n/H))), so it is deterministic and needs no atomics
on any target.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.levels import hi, level_of, lo, pick

I32 = "int32"


def spp_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    dt = spec.compute_dtype
    TPB = sched.threads
    levels = list(spec.levels)
    S = spec.bins
    offsets = [sum(n * n for n in levels[:i]) for i in range(len(levels))]
    avg = spec.mode == "avg"
    zero = tirx.const(0.0, dt)

    def level(b):
        return level_of(b, offsets, I32)

    @T.prim_func
    def forward(x_h: T.handle, o_h: T.handle, a_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int32()
        H = T.int32()
        W = T.int32()
        C = T.int32()
        D = T.int32()
        A = T.int32()
        x = T.match_buffer(x_h, (N, H, W, C), dt)
        out = T.match_buffer(o_h, (N, D), dt)
        aux = T.match_buffer(a_h, (A,), I32)
        for blk in T.thread_binding((N * S * C + TPB - 1) // TPB, thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                acc = T.alloc_buffer((1,), dt, scope="local")
                arg = T.alloc_buffer((1,), I32, scope="local")
                if blk * TPB + t < N * S * C:
                    c = (blk * TPB + t) % C
                    b = (blk * TPB + t) // C % S
                    n = (blk * TPB + t) // (C * S)
                    lv = level(b)
                    m = pick(lv, levels, I32)
                    q = b - pick(lv, offsets, I32)
                    acc[0] = zero  # max: the first pixel replaces it (arg < 0); WGSL has no inf literal
                    arg[0] = -1
                    for h in range(lo(q // m, H, m), hi(q // m, H, m)):
                        for w in range(lo(q % m, W, m), hi(q % m, W, m)):
                            if avg:
                                acc[0] = acc[0] + x[n, h, w, c]
                            elif arg[0] < 0 or x[n, h, w, c] > acc[0]:
                                acc[0] = x[n, h, w, c]
                                arg[0] = h * W + w
                    j = n * D + pick(lv, offsets, I32) * C + c * m * m + q
                    if avg:
                        out[n, j - n * D] = acc[0] / T.Cast(
                            dt, (hi(q // m, H, m) - lo(q // m, H, m)) * (hi(q % m, W, m) - lo(q % m, W, m)))
                    else:
                        out[n, j - n * D] = acc[0]
                        if A > 0:
                            aux[j] = arg[0]

    @T.prim_func
    def backward(g_h: T.handle, a_h: T.handle, gi_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        N = T.int32()
        H = T.int32()
        W = T.int32()
        C = T.int32()
        D = T.int32()
        A = T.int32()
        grad = T.match_buffer(g_h, (N, D), dt)
        aux = T.match_buffer(a_h, (A,), I32)
        grad_input = T.match_buffer(gi_h, (N, H, W, C), dt)
        for blk in T.thread_binding((N * H * W * C + TPB - 1) // TPB, thread="blockIdx.x"):
            for t in T.thread_binding(TPB, thread="threadIdx.x"):
                acc = T.alloc_buffer((1,), dt, scope="local")
                if blk * TPB + t < N * H * W * C:
                    c = (blk * TPB + t) % C
                    w = (blk * TPB + t) // C % W
                    h = (blk * TPB + t) // (C * W) % H
                    n = (blk * TPB + t) // (C * W * H)
                    acc[0] = zero
                    for lv in T.unroll(len(levels)):
                        m = T.meta_var(pick(lv, levels, I32))
                        base = T.meta_var(pick(lv, offsets, I32) * C + c * m * m)
                        for i in range(h * m // H, (h * m + m + H - 1) // H):
                            for jj in range(w * m // W, (w * m + m + W - 1) // W):
                                if avg:
                                    acc[0] = acc[0] + grad[n, base + i * m + jj] / T.Cast(
                                        dt, (hi(i, H, m) - lo(i, H, m)) * (hi(jj, W, m) - lo(jj, W, m)))
                                elif aux[n * D + base + i * m + jj] == h * W + w:
                                    acc[0] = acc[0] + grad[n, base + i * m + jj]
                    grad_input[n, h, w, c] = acc[0]

    return {"forward": forward, "backward": backward}


def kernels(spec, schedule) -> dict:
    return spp_kernels(spec, schedule)
