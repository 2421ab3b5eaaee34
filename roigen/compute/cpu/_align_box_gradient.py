"""Box gradients on the CPU in the forward's (image, channel block) tasks: RoIAlign's here,
rotated RoIAlign's, deformable RoI pooling's and PrRoIPool's in their modules, on this
scaffold.

The gradient of a box is a sum over its channels and samples (common/sample_gradient.py):
per sample, g times the sample's slope along x (and y), times how the sample moves with
each box coordinate.  One task per box (the earlier form) read the box's region of the
map in every channel: about a megabyte per box on fpn_box, which does not stay in L2, so
1,024 boxes read it from L3 one after another (RoIAlign's took 24 ms, 12 ms with every
box the same box).  Here each (image, block) task converts its slab of the map once, as
the forward does, and every box of that image samples the slab from L2 (RoIAlign's:
11 ms).

- `box_slopes(rois, stab, H, W)` fills a per-box float table, laid out as the forward's
  tables, with what the op's sums need beyond the forward's tables: its tasks find no
  geometry the forward's tasks do not.
- A task keeps, per lane, a few running sums for each box of its image (`sums` of them,
  the op's `box_sums` macro), each a sum over the box's samples of gx or gy (the sample's
  g-weighted slopes) times a factor of the sample's own, and stores them to
  `partial[k, cb]`, (K, Cb, sums, L) scratch of the kernel's.  The box's own terms (its
  sizes, angle, offsets) multiply the sums once, at the end.
- A second pass adds each box's partial sums over blocks and lanes in a fixed order (so
  the result is deterministic without atomics) and the op's `finish` macro turns the
  totals into the box's gradient.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

from ..common.bilinear import corners_at, scatter_macro
from ..common.indexing import unravel
from ..common.sample_gradient import moves
from ..common.sampling import box_grids, box_rule, inverse_count, sample_fraction, sample_pos
from ..common.signature import dims
from ._align import sample_index, sample_table_corners
from ._layout import block_macros, map_shape
from ._transpose import block_transpose, result_slot

# How many boxes ahead a task looks for its image's next box (two images: one in two is).
LOOKAHEAD = 3


def visit(order, i, K):
    """The box a task visits i-th: order[i], clamped into [0, K) (the order is the backend's,
    `visit_order`, but a kernel reads no index it has not bounded)."""
    return T.min(T.max(T.Cast("int64", order[i]), T.int64(0)), K - 1)


def blocked_box_gradient_kernels(spec, lanes: int, sums: int, count, box_sums, finish,
                                 work=(1,), scatters: bool = False) -> dict[str, tirx.PrimFunc]:
    """`backward_boxes(data, rois, itab, ftab, stab, aux, grad_out, out, grad_rois)`: `data`
    the caller's map, `itab`/`ftab` the forward's tables, `stab` the op's `box_slopes` table
    (unread by ops without one), `aux` the forward's argmax in max mode (size 0 otherwise),
    `out` the forward's output.  With `scatters`, also `backward_with_boxes(..., grad_rois,
    grad_input)`, which writes the map's gradient too (the caller's layout, as `data`).

    `count(rois, k)`: what the output gradient is divided by as it is read (the sample
    count in avg mode); `box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr,
    work, H, W)` adds box k's samples to acc (sums, L), reading the slab at [0, 0, 0, row*W +
    col, lane] and the output gradient bin-major, gbin[p, lane] (abin: max mode's argmax);
    where `gslab` is not None (a slab as `slab`, in `backward_with_boxes`) it also adds
    each sample's g times its corner weights there, as the input gradient's kernel does;
    `tr`, a (2, L, L) block-transpose scratch, and `work` (of shape `work`) are the task's;
    `finish(rois, k, total, slots, grad_out, out, grad_rois)` writes row k of grad_rois
    (zeroed) from the sums over blocks, per lane (slots, (sums, L)) and over the lanes too
    (total, (sums,)).

    Why one kernel for both gradients: they visit the same samples with the same output
    gradient, so together they read the output gradient and the tables once and the slab's
    corners once per sample (roi_align on fpn_box: 20.4-23.2 ms against 23.4-26.6 for the two
    kernels).
    """
    dt = spec.compute_dtype
    L = lanes
    P = spec.pooled_height * spec.pooled_width
    zero = tirx.const(0.0, dt)
    argmax = bool(spec.aux_outputs)
    ROW = spec.row_columns
    load, store = block_macros(spec.layout, dt, L)
    gather = bin_major_block(dt, L, P, argmax)

    # Lines of one (box, block) run of the output gradient (P * L values, contiguous).
    STEP = 64 * 8 // tvm.DataType(dt).bits
    LINES = (P * L + STEP - 1) // STEP

    @T.macro
    def prefetch_next(rois, grad_out, order, found, i, n, cb, K, C):
        # A task reads its boxes' runs of the output gradient a box apart (50 KB on fpn_box),
        # too far for the hardware prefetcher: reading and turning them took 5 ms of the
        # kernel's 12.8.  The run of the image's next box, if one of the next LOOKAHEAD boxes
        # is, is requested while this box is summed: 12.2-14.5 -> 10.7-11.0 ms.  It is requested
        # into L2, not L1 (locality 2: prefetcht1): this box's samples pass some 100 KB of the
        # slabs through L1 before the run is read, and the requests into L1 cost more than they
        # saved (deform_roi_pool's fused kernel 20.7-22.0 -> 19.9 ms, every op's faster).
        flat = T.decl_buffer((K * C * P,), dt, data=grad_out.data)
        found[0] = 0
        for d in range(1, LOOKAHEAD + 1):
            if found[0] == 0 and i + d < K:
                ahead = T.meta_var(visit(order, i + d, K))
                if T.Cast("int64", rois[ahead, 0]) == n:
                    found[0] = 1
                    for line in range(LINES):
                        T.evaluate(T.call_intrin("", "tirx.prefetch", T.address_of(
                            flat[T.min((ahead * C + cb * L) * P + line * STEP, K * C * P - 1)]), 0, 2, 1))

    @T.macro
    def box_tasks(data, grad_input, rois, itab, ftab, stab, aux, grad_out, order, partial, N, C, H, W, K, A):
        # Each (image, block) task's per-box sums into partial[k, cb]; with `grad_input` (not
        # None) the task also owns that slab of the map's gradient, scattered from the same
        # samples and output gradient, and stores it on the way out.  Boxes are visited in
        # `order` (`visit_order`).
        Cb = T.meta_var((C + L - 1) // L)
        for task in T.parallel(N * Cb):
            n, cb = unravel(task, (N, Cb))
            slab = T.alloc_buffer((1, 1, H, W, L), dt)
            gbin = T.alloc_buffer((P, L), dt)
            abin = T.alloc_buffer((P, L), "int32")
            tr = T.alloc_buffer((2, L, L), dt)
            atr = T.alloc_buffer((2, L, L), "int32")
            acc = T.alloc_buffer((sums, L), dt)
            found = T.alloc_buffer((1,), "int32")
            scratch = T.alloc_buffer(work, dt)
            gslab = T.alloc_buffer((1, 1, H, W, L) if grad_input is not None else (1, 1, 1, 1, L), dt)
            load(data, slab, n, cb, 0, 0, C, H, W)
            if grad_input is not None:
                for h, w in T.grid(H, W):
                    for lane in T.vectorized(L):
                        gslab[0, 0, h, w, lane] = zero
            for i in range(K):
                k = visit(order, i, K)
                if T.Cast("int64", rois[k, 0]) == n:
                    prefetch_next(rois, grad_out, order, found, i, n, cb, K, C)
                    gather(gbin, abin, tr, atr, grad_out, aux, k, cb, C, A, count(rois, k))
                    for j, lane in T.grid(sums, L):
                        acc[j, lane] = zero
                    box_sums(slab, gslab if grad_input is not None else None, rois, itab, ftab, stab, gbin, abin,
                             k, acc, tr, scratch, H, W)
                    for j in range(sums):
                        for lane in T.vectorized(L):
                            partial[k, cb, j, lane] = acc[j, lane]
            if grad_input is not None:
                store(gslab, grad_input, n, cb, 0, 0, C, H, W)

    @T.macro
    def box_totals(rois, partial, grad_out, out, grad_rois, N, C, K):
        Cb = T.meta_var((C + L - 1) // L)
        for k in T.parallel(K):
            slots = T.alloc_buffer((sums, L), dt)
            total = T.alloc_buffer((sums,), dt)
            for j in range(sums):
                for lane in T.vectorized(L):
                    slots[j, lane] = zero
                # Every block of box k was written by its image's tasks; a batch index naming
                # no image (refused before any kernel runs) leaves its partial sums unwritten.
                if T.Cast("int64", rois[k, 0]) >= 0 and T.Cast("int64", rois[k, 0]) < N:
                    for b in range(Cb):
                        for lane in T.vectorized(L):
                            slots[j, lane] = slots[j, lane] + partial[k, b, j, lane]
                total[j] = zero
                for lane in range(L):
                    total[j] = total[j] + slots[j, lane]
            for j in range(ROW):
                grad_rois[k, j] = zero
            finish(rois, k, total, slots, grad_out, out, grad_rois)

    N, C, H, W, K, S, Z, A = dims("N C H W K S Z A", "int64")
    @T.prim_func
    def backward_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt), rois: T.Buffer((K, ROW), dt),
                       itab: T.Buffer((K, S), "int32"), ftab: T.Buffer((K, S), dt), stab: T.Buffer((K, Z), dt),
                       aux: T.Buffer((A,), "int32"), grad_out: T.Buffer((K, C, P), dt),
                       out: T.Buffer((K, C, P), dt), order: T.Buffer((K,), "int32"),
                       grad_rois: T.Buffer((K, ROW), dt)):
        partial = T.alloc_buffer((K, (C + L - 1) // L, sums, L), dt)
        box_tasks(data, None, rois, itab, ftab, stab, aux, grad_out, order, partial, N, C, H, W, K, A)
        box_totals(rois, partial, grad_out, out, grad_rois, N, C, K)

    N, C, H, W, K, S, Z, A = dims("N C H W K S Z A", "int64")
    @T.prim_func
    def backward_with_boxes(data: T.Buffer(map_shape(spec.layout, N, C, H, W), dt),
                            rois: T.Buffer((K, ROW), dt), itab: T.Buffer((K, S), "int32"),
                            ftab: T.Buffer((K, S), dt), stab: T.Buffer((K, Z), dt), aux: T.Buffer((A,), "int32"),
                            grad_out: T.Buffer((K, C, P), dt), out: T.Buffer((K, C, P), dt),
                            order: T.Buffer((K,), "int32"), grad_rois: T.Buffer((K, ROW), dt),
                            grad_input: T.Buffer(map_shape(spec.layout, N, C, H, W), dt)):
        partial = T.alloc_buffer((K, (C + L - 1) // L, sums, L), dt)
        box_tasks(data, grad_input, rois, itab, ftab, stab, aux, grad_out, order, partial, N, C, H, W, K, A)
        box_totals(rois, partial, grad_out, out, grad_rois, N, C, K)

    kernels = {"backward_boxes": backward_boxes}
    if scatters:
        kernels["backward_with_boxes"] = backward_with_boxes
    return kernels


def slope_gradient(g, slab, y0, y1, x0, x1, lane, wy0, wy1, wx0, wx1):
    """(g * d value/dx, g * d value/dy) of the bilinear sample of lane `lane` at rows y0, y1
    (times W) and columns x0, x1 of `slab` ([0, 0, 0, row*W + col] addresses pixel (row, col)):
    its read with one axis' weights replaced by (-1, +1) (common/sample_gradient.py).  Weights
    of 0 where the sample does not move its weights along that axis give a slope of 0."""
    v00, v01, v10, v11 = (slab[0, 0, 0, T.Cast("int64", y + x), lane] for y in (y0, y1) for x in (x0, x1))
    return g * (wy0 * (v01 - v00) + wy1 * (v11 - v10)), g * (wx0 * (v10 - v00) + wx1 * (v11 - v01))


def sample_slopes(slab, ys, xs, lane):
    """(d value/dx, d value/dy) of a sample's bilinear read of lane `lane` (`slope_gradient`
    with g = 1).  Ops whose samples carry factors of their own (slope flags, fractions along
    the box: rotated and deformable boxes) sum these times each factor over a bin's samples
    and multiply the bin's sums by its g once: g times a flag, times the slope, times a
    fraction at every sample were vector products where one fused multiply-add by the
    factor (from `box_slopes`' table) does."""
    y0, y1, wy0, wy1 = ys
    x0, x1, wx0, wx1 = xs
    return slope_gradient(tirx.const(1.0, slab.dtype), slab, y0, y1, x0, x1, lane, wy0, wy1, wx0, wx1)


# A kept sample's factors in `box_slopes`' table (limits.SLOPE_TABLE_SCALE sizes it), at
# entries FACTORS * n .. FACTORS * n + FACTORS - 1 for its `_align.sample_index` n.
FACTORS = 4


@T.macro
def put_factors(stab, k, n, f0, f1, f2, f3):
    """Store sample n's four factors in row k of `box_slopes`' table (`kept_sample` reads them)."""
    stab[k, FACTORS * n] = f0
    stab[k, FACTORS * n + 1] = f1
    stab[k, FACTORS * n + 2] = f2
    stab[k, FACTORS * n + 3] = f3


def kept_sample(spec):
    """`read(rois, itab, ftab, stab, k, ph, pw, iy, ix, gh, gw, H, W)` -> (ys, xs, f0, f1, f2,
    f3): sample (iy, ix) of bin (ph, pw) of a box that keeps its samples' corners
    (limits.keeps_samples), its corners from the forward's tables and its factors from
    `box_slopes`' (`put_factors`' order)."""
    corners = sample_table_corners(spec)
    PW = spec.pooled_width

    def read(rois, itab, ftab, stab, k, ph, pw, iy, ix, gh, gw, H, W):
        n = sample_index(PW, ph, pw, iy, ix, gh, gw)
        ys, xs = corners(rois, itab, ftab, k, ph, pw, iy, ix, gh, gw, H, W)
        return (ys, xs, *(stab[k, FACTORS * n + i] for i in range(FACTORS)))

    return read


_scatter = scatter_macro(rows_first=True)


@T.macro
def scatter_sample(gslab, g, ys, xs, lane):
    """Add g times the sample's corner weights into `gslab` (a slab as the tasks' map slab),
    the input gradient's share of the sample; nothing where `gslab` is None."""
    if gslab is not None:
        _scatter(gslab, lambda y, x: (0, 0, 0, T.Cast("int64", y + x), lane), ys, xs, g)


def align_box_gradient_kernels(spec, lanes: int) -> dict[str, tirx.PrimFunc]:
    """RoIAlign's `box_slopes` and `backward_boxes`, avg or max mode.

    A sample moves with the box's two coordinates along an axis by shares (1 - a, a) of its
    slope, a its fraction along the box (common/sample_gradient.py).  `box_slopes` holds,
    per table entry, (slope flag * (1 - a), slope flag * a), times 1/count for y in avg
    mode (the y weights of the forward's tables carry it for x).  So a task finds no
    geometry itself, and keeps four sums per lane: g * slope along x times each share, and
    along y likewise.
    """
    dt = spec.compute_dtype
    L = lanes
    PH, PW = spec.pooled_size
    avg = spec.mode == "avg"
    zero = tirx.const(0.0, dt)
    one = tirx.const(1.0, dt)
    scale = tirx.const(spec.spatial_scale, dt)
    start, extent = box_rule(spec)
    grids = box_grids(spec)

    @T.macro
    def axis_slopes(rois, stab, k, col, pooled, grid, base, limit, weight):
        for s in range(pooled * grid):
            pos = T.meta_var(sample_pos(start(rois, k, col), extent(rois, k, col) / tirx.const(pooled, dt), grid,
                                        s, dt))
            a = T.meta_var(sample_fraction(s // grid, s % grid, grid, pooled, dt))
            stab[k, base + 2 * s] = T.if_then_else(moves(pos, limit, dt), (one - a) * weight, zero)
            stab[k, base + 2 * s + 1] = T.if_then_else(moves(pos, limit, dt), a * weight, zero)

    K, S = dims("K S", "int64")
    @T.prim_func
    def box_slopes(rois: T.Buffer((K, 5), dt), stab: T.Buffer((K, S), dt), H: T.int64, W: T.int64):
        for k in T.parallel(K):
            gh, gw = T.meta_var(grids(rois, k))
            inv = T.meta_var(inverse_count(gh, gw, dt) if avg else one)
            axis_slopes(rois, stab, k, 2, PH, gh, 0, H, inv)
            axis_slopes(rois, stab, k, 1, PW, gw, 2 * PH * gh, W, one)

    @T.macro
    def box_sums(slab, gslab, rois, itab, ftab, stab, gbin, abin, k, acc, tr, work, H, W):
        gh, gw = T.meta_var(grids(rois, k))
        for ph, pw, iy, ix in T.grid(PH, PW, gh, gw):
            r = T.meta_var(2 * (ph * gh + iy))
            c = T.meta_var(2 * PH * gh + 2 * (pw * gw + ix))
            y0, y1, wy0, wy1 = T.meta_var(corners_at(itab, ftab, k, r))
            x0, x1, wx0, wx1 = T.meta_var(corners_at(itab, ftab, k, c))
            p = T.meta_var(ph * PW + pw)
            for lane in T.vectorized(L):
                # Max mode: only where the sample won the lane's channel (a Select keeps the
                # loop vector).
                g = T.meta_var(gbin[p, lane] if avg else tirx.Select(
                    abin[p, lane] == T.Cast("int32", iy * gw + ix), gbin[p, lane], zero))
                gx, gy = T.meta_var(slope_gradient(g, slab, y0, y1, x0, x1, lane, wy0, wy1, wx0, wx1))
                acc[0, lane] = acc[0, lane] + gx * stab[k, c]
                acc[1, lane] = acc[1, lane] + gx * stab[k, c + 1]
                acc[2, lane] = acc[2, lane] + gy * stab[k, r]
                acc[3, lane] = acc[3, lane] + gy * stab[k, r + 1]
                scatter_sample(gslab, g, (y0, y1, wy0, wy1), (x0, x1, wx0, wx1), lane)

    # The non-aligned box is at least one pixel: where that clamp holds, the sample moves
    # with the first coordinate only (d/dx1' = 1, d/dx2' = 0).
    def clamped(rois, k, col):
        return (start(rois, k, col + 2) - start(rois, k, col) < one) if not spec.aligned else tirx.const(False)

    @T.macro
    def finish(rois, k, total, slots, grad_out, out, grad_rois):
        grad_rois[k, 1] = T.if_then_else(clamped(rois, k, 1), total[0] + total[1], total[0]) * scale
        grad_rois[k, 3] = T.if_then_else(clamped(rois, k, 1), zero, total[1]) * scale
        grad_rois[k, 2] = T.if_then_else(clamped(rois, k, 2), total[2] + total[3], total[2]) * scale
        grad_rois[k, 4] = T.if_then_else(clamped(rois, k, 2), zero, total[3]) * scale

    return {"box_slopes": box_slopes,
            **blocked_box_gradient_kernels(spec, lanes, 4, lambda rois, k: one, box_sums, finish,
                                            scatters=True)}


def bin_major_block(dt: str, lanes: int, bins: int, argmax: bool):
    """A macro `gather(gbin, abin, tr, atr, grad_out, aux, k, cb, C, A, scale)` filling
    gbin[p, lane] = grad_out[k, cb*L + lane, p] * scale and, with `argmax`,
    abin[p, lane] = aux[(k*C + cb*L + lane)*P + p]: channel block cb of box k's
    output gradient (and argmax), bin-major.

    Full channel blocks turn L bins at a time through block transposes in `tr`/`atr`
    ((2, L, L) scratch, of dt and int32); the remainder bins and a partial block go
    element by element.  Channels past C get 0 (and argmax -1, which no sample is);
    so does every channel where `aux` (A values) is too short for box k.
    """
    L, P = lanes, bins
    slot_of = result_slot(L)
    transpose = block_transpose(L)
    zero = tirx.const(0.0, dt)
    whole = T.Ramp(0, 1, L)

    @T.macro
    def gather(gbin, abin, tr, atr, grad_out, aux, k, cb, C, A, scale):
        kept = T.meta_var(A >= (k + 1) * C * P)
        if (cb + 1) * L <= C:
            for chunk in range(P // L):
                for i in T.unroll(L):
                    tr[1, i, whole] = grad_out[k, cb * L + i, T.Ramp(chunk * L, 1, L)]
                transpose(tr)
                for j in T.unroll(L):
                    gbin[chunk * L + j, whole] = tr[slot_of, j, whole] * T.Broadcast(scale, L)
                if argmax:
                    if kept:
                        for i in T.unroll(L):
                            atr[1, i, whole] = aux[T.Ramp((k * C + cb * L + i) * P + chunk * L, 1, L)]
                        transpose(atr)
                        for j in T.unroll(L):
                            abin[chunk * L + j, whole] = atr[slot_of, j, whole]
                    else:
                        for j, lane in T.grid(L, L):
                            abin[chunk * L + j, lane] = -1
            for r, lane in T.grid(P % L, L):
                gbin[P - P % L + r, lane] = grad_out[k, cb * L + lane, P - P % L + r] * scale
                if argmax:
                    abin[P - P % L + r, lane] = T.if_then_else(
                        kept, aux[T.min((k * C + cb * L + lane) * P + P - P % L + r, A - 1)], -1)
        else:
            for p, lane in T.grid(P, L):
                c = T.meta_var(T.min(cb * L + lane, C - 1))
                gbin[p, lane] = T.if_then_else(cb * L + lane < C, grad_out[k, c, p], zero) * scale
                if argmax:
                    abin[p, lane] = T.if_then_else(
                        cb * L + lane < C and kept, aux[T.min((k * C + c) * P + p, A - 1)], -1)

    return gather

