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

from ..common.indexing import unravel
from ..common.levels import hi, level_of, lo, pick
from ..common.signature import dims
from ._threads import launch, registers

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

    N, H, W, C, D, A = dims("N H W C D A", I32)
    @T.prim_func
    def forward(x: T.Buffer((N, H, W, C), dt), out: T.Buffer((N, D), dt), aux: T.Buffer((A,), I32)):
        blk, t = launch((N * S * C + TPB - 1) // TPB, TPB)
        acc, arg = registers(dt, I32)
        if blk * TPB + t < N * S * C:
            n, b, c = unravel(blk * TPB + t, (N, S, C))
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

    N, H, W, C, D, A = dims("N H W C D A", I32)
    @T.prim_func
    def backward(grad: T.Buffer((N, D), dt), aux: T.Buffer((A,), I32),
                 grad_input: T.Buffer((N, H, W, C), dt)):
        blk, t = launch((N * H * W * C + TPB - 1) // TPB, TPB)
        (acc,) = registers(dt)
        if blk * TPB + t < N * H * W * C:
            n, h, w, c = unravel(blk * TPB + t, (N, H, W, C))
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
