"""Align-family kernels on GPUs whose samples each thread finds for itself (contract in __init__).

The align family's thread layout (`_align.py`) without its shared sample
tables, for ops whose sample corners are not a row table times a column table
(rotated boxes) or cost little to find (PrRoIPool's cells): each thread computes
its own.  forward and backward_atomic run one block per (box, bin, channel
chunk); the deterministic backward one thread per (image, channel), walking that
image's boxes in order and owning its channel of the gradient.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, hold_macro, interpolate, scatter_macro
from ..common.indexing import unravel
from ..common.signature import dims
from ._threads import kernel_set, launch

I32 = "int32"


def sampled_kernels(spec, sched, grids, sample) -> dict[str, tirx.PrimFunc]:
    """Kernels from `grids(rois, k)` -> (gh, gw), box k's samples per bin along y and x (int32),
    and `sample(rois, k, b, gh, gw, iy, ix, H, W)` -> (ys, xs), the corners of sample (iy, ix)
    of bin b, each (low, high, w_low, w_high), the bin's normaliser folded into the y weights.

    A thread holds its box's grid and each sample's corners in registers (`Registers`)."""
    dt = spec.compute_dtype
    PH, PW = spec.pooled_size
    P = PH * PW
    TPB = sched.threads
    BOX = spec.row_columns
    zero = tirx.const(0.0, dt)
    scatter, scatter_atomic = scatter_macro(), scatter_macro(atomic=True)

    def block_of(blk, t, K, CO):
        k, b, chunk = unravel(blk, (K, P, (CO + TPB - 1) // TPB))
        return k, b, chunk * TPB + t

    bound = Registers(dt, grids, sample)

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def forward(x: T.Buffer((N, H, W, CI), dt), rois: T.Buffer((K, BOX), dt), out: T.Buffer((K, CO, P), dt),
                aux: T.Buffer((A,), I32)):
        blk, t = launch(K * P * ((CO + TPB - 1) // TPB), TPB)
        acc = T.alloc_buffer((1,), dt, scope="local")
        grid, at, weight = bound.alloc()
        k, b, c = block_of(blk, t, K, CO)
        if c < CO:
            n = T.Cast(I32, rois[k, 0])
            bound.fill_grid(grid, rois, k)
            acc[0] = zero
            for iy, ix in T.grid(grid[0], grid[1]):
                bound.fill_sample(at, weight, grid, rois, k, b, iy, ix, H, W)
                ys, xs = T.meta_var(bound.corners(at, weight))
                acc[0] = interpolate(lambda y, xx: x[n, y, xx, c], ys, xs, onto=acc[0])
            out[k, c, b] = acc[0]

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, BOX), dt), aux: T.Buffer((A,), I32),
                 grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch((N * CI + TPB - 1) // TPB, TPB)
        grid, at, weight = bound.alloc()
        if blk * TPB + t < N * CI:
            n, c = unravel(blk * TPB + t, (N, CI))
            for k in range(K):
                if T.Cast(I32, rois[k, 0]) == n:
                    bound.fill_grid(grid, rois, k)
                    for b in range(P):
                        for iy, ix in T.grid(grid[0], grid[1]):
                            bound.fill_sample(at, weight, grid, rois, k, b, iy, ix, H, W)
                            ys, xs = T.meta_var(bound.corners(at, weight))
                            scatter(grad_input, lambda y, xx: (n, y, xx, c), ys, xs, grad[k, c, b])

    N, H, W, CI, K, CO, A = dims("N H W CI K CO A", I32)
    @T.prim_func
    def backward_atomic(grad: T.Buffer((K, CO, P), dt), rois: T.Buffer((K, BOX), dt), aux: T.Buffer((A,), I32),
                        grad_input: T.Buffer((N, H, W, CI), dt)):
        blk, t = launch(K * P * ((CO + TPB - 1) // TPB), TPB)
        grid, at, weight = bound.alloc()
        k, b, c = block_of(blk, t, K, CO)
        if c < CO:
            n = T.Cast(I32, rois[k, 0])
            bound.fill_grid(grid, rois, k)
            for iy, ix in T.grid(grid[0], grid[1]):
                bound.fill_sample(at, weight, grid, rois, k, b, iy, ix, H, W)
                ys, xs = T.meta_var(bound.corners(at, weight))
                scatter_atomic(grad_input, lambda y, xx: (n, y, xx, c), ys, xs, grad[k, c, b])

    (K,) = dims("K", I32)
    @T.prim_func
    def grid_size(rois: T.Buffer((K, BOX), dt), sizes: T.Buffer((K, 2), I32)):
        # Each box's adaptive sample grid, for the runtime's limit (as roi_align's).
        blk, t = launch((K + TPB - 1) // TPB, TPB)
        if blk * TPB + t < K:
            sizes[blk * TPB + t, 0] = grids(rois, blk * TPB + t)[0]
            sizes[blk * TPB + t, 1] = grids(rois, blk * TPB + t)[1]

    funcs = kernel_set(sched, forward, backward, backward_atomic)
    if getattr(spec, "sampling_ratio", 0) <= 0:  # grids that depend on the box
        funcs["grid_size"] = grid_size
    return funcs


def grid_macro(grids):
    """A macro `fill(grid, rois, k)` storing box k's (gh, gw) (`grids`) in `grid`, two int32
    thread registers read back as grid[0], grid[1]: held, not written out at every use
    (bilinear.hold_macro)."""

    @T.macro
    def fill(grid, rois, k):
        grid[0] = grids(rois, k)[0]
        grid[1] = grids(rois, k)[1]

    return fill


class Registers:
    """A thread's registers for its box's grid and for one sample's corners, filled from
    `grids` and `sample` (as `sampled_kernels` takes them).

    A value the kernels use twice (a grid in every sample's position, a corner in two
    reads) would otherwise be written out in full at each use (`bilinear.hold_macro`).
    """

    def __init__(self, dt, grids, sample):
        self.dt = dt
        hold = hold_macro()

        @T.macro
        def fill_sample(at, weight, grid, rois, k, b, iy, ix, H, W):
            ys, xs = T.meta_var(sample(rois, k, b, grid[0], grid[1], iy, ix, H, W))
            hold(at, weight, 0, ys)
            hold(at, weight, 2, xs)

        self.fill_grid = grid_macro(grids)
        self.fill_sample = fill_sample

    def alloc(self) -> tuple:
        """(grid, at, weight): (gh, gw), a sample's corner indices (y low, y high, x low,
        x high) and their weights."""
        return (T.alloc_buffer((2,), I32, scope="local"), T.alloc_buffer((4,), I32, scope="local"),
                T.alloc_buffer((4,), self.dt, scope="local"))

    @staticmethod
    def corners(at, weight) -> tuple:
        """(ys, xs) of the sample in the registers."""
        return corners_at(at, weight, 0), corners_at(at, weight, 2)
