"""Max- and average-pooling over integer bins on GPUs: roi_pool, roi_spp, ps_roi_pool.

One thread per output element.  A bin's geometry is a handful of integer
operations on its box, less than a shared-memory round trip would cost, so
each thread computes its own.  roi_pool and roi_spp put channels innermost
(a warp reads one pixel's channels: coalesced on NHWC); ps_roi_pool puts bins
innermost, where consecutive bins read consecutive input channels.

The deterministic backward runs one thread per (image, input channel), walking
that image's boxes in order (no atomics); backward_atomic (CUDA) scatters from
each output element.  `aux` (roi_pool, roi_spp): each bin's first maximum as
the pixel index h*W + w, -1 for an empty bin, as torchvision's argmax.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.indexing import unravel
from ..common.levels import LOWEST, level_of, pick
from ..common.sampling import pool_edge
from ..common.signature import dims
from ._threads import kernel_set, launch, registers

I32 = "int32"


def roi_pool_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    return pool_family(spec, sched, ((spec.pooled_height, spec.pooled_width),))


def roi_spp_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    return pool_family(spec, sched, spec.grids)


def pool_family(spec, sched, grids) -> dict[str, tirx.PrimFunc]:
    """A pyramid of RoIPool grids: out (K, D), for each grid in order C channels of GH*GW bins."""
    dt = spec.compute_dtype
    TPB = sched.threads
    S = sum(gh * gw for gh, gw in grids)
    offsets = [sum(gh * gw for gh, gw in grids[:i]) for i in range(len(grids))]
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)

    def level(b):
        return level_of(b, offsets, I32)

    def GH(lv):
        return pick(lv, [g[0] for g in grids], I32)

    def GW(lv):
        return pick(lv, [g[1] for g in grids], I32)

    def OFF(lv):
        return pick(lv, offsets, I32)

    N, H, W, C, K, D, A = dims("N H W C K D A", I32)
    @T.prim_func
    def forward(x: T.Buffer((N, H, W, C), dt), rois: T.Buffer((K, 5), dt), out: T.Buffer((K, D), dt),
                aux: T.Buffer((A,), I32)):
        blk, t = launch((K * S * C + TPB - 1) // TPB, TPB)
        acc, arg = registers(dt, I32)
        if blk * TPB + t < K * S * C:
            k, b, c = unravel(blk * TPB + t, (K, S, C))
            lv = level(b)
            gh = GH(lv)
            gw = GW(lv)
            q = b - OFF(lv)
            n = T.Cast(I32, rois[k, 0])
            hs = pool_edge(rois, k, 2, scale, True, gh, q // gw, T.floor, H, dt, I32)
            he = pool_edge(rois, k, 2, scale, True, gh, q // gw + 1, T.ceil, H, dt, I32)
            ws = pool_edge(rois, k, 1, scale, True, gw, q % gw, T.floor, W, dt, I32)
            we = pool_edge(rois, k, 1, scale, True, gw, q % gw + 1, T.ceil, W, dt, I32)
            acc[0] = tirx.const(LOWEST, dt)
            arg[0] = -1
            for h in range(hs, he):
                for w in range(ws, we):
                    if x[n, h, w, c] > acc[0]:
                        acc[0] = x[n, h, w, c]
                        arg[0] = h * W + w
            out[k, OFF(lv) * C + c * gh * gw + q] = T.Select(he <= hs or we <= ws, zero, acc[0])
            if A > 0:
                aux[k * D + OFF(lv) * C + c * gh * gw + q] = arg[0]

    N, H, W, C, K, D, A = dims("N H W C K D A", I32)
    @T.prim_func
    def backward(grad: T.Buffer((K, D), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                 grad_input: T.Buffer((N, H, W, C), dt)):
        blk, t = launch((N * C + TPB - 1) // TPB, TPB)
        if blk * TPB + t < N * C:
            n, c = unravel(blk * TPB + t, (N, C))
            for k in range(K):
                if T.Cast(I32, rois[k, 0]) == n:
                    for b in range(S):
                        lv = level(b)
                        j = OFF(lv) * C + c * GH(lv) * GW(lv) + b - OFF(lv)
                        a = aux[k * D + j]
                        if a >= 0 and a < H * W:  # a pixel of this map, whoever forged aux
                            grad_input[n, a // W, a % W, c] += grad[k, j]

    N, H, W, C, K, D, A = dims("N H W C K D A", I32)
    @T.prim_func
    def backward_atomic(grad: T.Buffer((K, D), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                        grad_input: T.Buffer((N, H, W, C), dt)):
        blk, t = launch((K * S * C + TPB - 1) // TPB, TPB)
        if blk * TPB + t < K * S * C:
            k, b, c = unravel(blk * TPB + t, (K, S, C))
            lv = level(b)
            j = OFF(lv) * C + c * GH(lv) * GW(lv) + b - OFF(lv)
            a = aux[k * D + j]
            if a >= 0 and a < H * W:
                T.evaluate(T.cuda.atomic_add(
                    T.address_of(grad_input[T.Cast(I32, rois[k, 0]), a // W, a % W, c]), grad[k, j]))

    return kernel_set(sched, forward, backward, backward_atomic)


def ps_roi_pool_kernels(spec, sched) -> dict[str, tirx.PrimFunc]:
    """torchvision's ps_roi_pool: bins of the snapped box (size >= 1, no +1) clipped to
    [0, H-1) x [0, W-1) as its forward, averaged; the true gradient of that."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    TPB = sched.threads
    scale = tirx.const(spec.spatial_scale, dt)
    zero = tirx.const(0.0, dt)

    @T.macro
    def region(bounds, rois, k, b, H, W):
        """Fill bounds with the bin's [hs, he) x [ws, we)."""
        bounds[0] = pool_edge(rois, k, 2, scale, False, PH, b // PW, T.floor, H - 1, dt, I32)
        bounds[1] = pool_edge(rois, k, 2, scale, False, PH, b // PW + 1, T.ceil, H - 1, dt, I32)
        bounds[2] = pool_edge(rois, k, 1, scale, False, PW, b % PW, T.floor, W - 1, dt, I32)
        bounds[3] = pool_edge(rois, k, 1, scale, False, PW, b % PW + 1, T.ceil, W - 1, dt, I32)

    def area(bounds):
        return T.Cast(dt, (bounds[1] - bounds[0]) * (bounds[3] - bounds[2]))

    def nonempty(bounds):
        return tirx.all(bounds[1] > bounds[0], bounds[3] > bounds[2])

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def forward(x: T.Buffer((N, H, W, CI), dt), rois: T.Buffer((K, 5), dt), out: T.Buffer((K, CO, P), dt),
                aux: T.Buffer((A,), I32)):
        blk, t = launch((K * CO * P + TPB - 1) // TPB, TPB)
        bounds = T.alloc_buffer((4,), I32, scope="local")
        (acc,) = registers(dt)
        if blk * TPB + t < K * CO * P:
            k, c, b = unravel(blk * TPB + t, (K, CO, P))
            n = T.Cast(I32, rois[k, 0])
            region(bounds, rois, k, b, H, W)
            acc[0] = zero
            for h in range(bounds[0], bounds[1]):
                for w in range(bounds[2], bounds[3]):
                    acc[0] = acc[0] + x[n, h, w, c * P + b]
            out[k, c, b] = T.Select(nonempty(bounds), acc[0] / area(bounds), zero)

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                 grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch((N * CI + TPB - 1) // TPB, TPB)
        bounds = T.alloc_buffer((4,), I32, scope="local")
        if blk * TPB + t < N * CI:
            n, ci = unravel(blk * TPB + t, (N, CI))
            for k in range(K):
                if T.Cast(I32, rois[k, 0]) == n:
                    region(bounds, rois, k, ci % P, H, W)
                    if nonempty(bounds):
                        gv = grad[k, ci // P, ci % P] / area(bounds)
                        for h in range(bounds[0], bounds[1]):
                            for w in range(bounds[2], bounds[3]):
                                grad_input[n, h, w, ci] += gv

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward_atomic(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, 5), dt), aux: T.Buffer((A,), I32),
                        grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch((K * CO * P + TPB - 1) // TPB, TPB)
        bounds = T.alloc_buffer((4,), I32, scope="local")
        if blk * TPB + t < K * CO * P:
            k, c, b = unravel(blk * TPB + t, (K, CO, P))
            region(bounds, rois, k, b, H, W)
            if nonempty(bounds):
                gv = grad[k, c, b] / area(bounds)
                for h in range(bounds[0], bounds[1]):
                    for w in range(bounds[2], bounds[3]):
                        T.evaluate(T.cuda.atomic_add(
                            T.address_of(grad_input[T.Cast(I32, rois[k, 0]), h, w, c * P + b]), gv))

    return kernel_set(sched, forward, backward, backward_atomic)
