"""Pieces the CPU box-gradient kernels share: the output gradient (and argmax) turned
bin-major, and the pixel-major pack.

A box's gradient sums, over channels, the output gradient g of a bin times values read
at the bin's samples.  The output gradient is channel-major (K, C, PH*PW), so the
kernels first turn each (box, channel block) run of it bin-major through L x L block
transposes (`bin_major_block`, `bin_major_gather`): a sample's channel loop then reads
whole vectors rather than one strided value per lane.

RoIAlign, rotated RoIAlign and deformable RoI pooling run their box gradients in the
forward's (image, block) tasks (_align_box_gradient.py).  PrRoIPool's gives each box one
task (prroi_pool.py) that reads the map packed pixel-major, (N, H, W, Cb, L), by the
module's `box_pack` kernel (`box_pack_kernel`), so each corner it reads is one contiguous
run of all its channels; packed block-major, as the forward's slabs, each corner was Cb
lines a slab apart (PrRoIPool's box gradient on fpn_box: 1.66x its forward+backward
against 2.19x).  What limits that form is memory: each box reads its region of the map in
every channel, about a megabyte on fpn_box, from L3.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ._layout import layout_kernels
from ._transpose import block_transpose, result_slot


def box_pack_kernel(spec, lanes: int) -> tirx.PrimFunc:
    """The `box_pack` kernel the per-box kernels read: the caller's map, pixel-major blocks."""
    return layout_kernels(spec.layout, spec.compute_dtype, lanes)["pack_pixels"]


def bin_major_gather(dt: str, lanes: int, bins: int, argmax: bool):
    """A macro `gather(gbin, abin, tr, atr, grad_out, aux, k, C, Cb, A, scale)` filling
    gbin[p, cb, lane] = grad_out[k, cb*L + lane, p] * scale and, with `argmax`,
    abin[p, cb, lane] = aux[(k*C + cb*L + lane)*P + p]: box k's output gradient and argmax
    turned bin-major, so that each sample's channel loop reads whole vectors (one block
    at a time: `bin_major_block`)."""
    gather_block = bin_major_block(dt, lanes, bins, argmax)

    @T.macro
    def gather(gbin, abin, tr, atr, grad_out, aux, k, C, Cb, A, scale):
        for cb in range(Cb):
            gather_block(gbin, abin, tr, atr, grad_out, aux, k, cb, cb, C, A, scale)

    return gather


def bin_major_block(dt: str, lanes: int, bins: int, argmax: bool):
    """A macro `gather(gbin, abin, tr, atr, grad_out, aux, k, cb, slot, C, A, scale)` filling
    gbin[p, slot, lane] = grad_out[k, cb*L + lane, p] * scale and, with `argmax`,
    abin[p, slot, lane] = aux[(k*C + cb*L + lane)*P + p]: channel block cb of box k's
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
    def gather(gbin, abin, tr, atr, grad_out, aux, k, cb, slot, C, A, scale):
        kept = T.meta_var(A >= (k + 1) * C * P)
        if (cb + 1) * L <= C:
            for chunk in range(P // L):
                for i in T.unroll(L):
                    tr[1, i, whole] = grad_out[k, cb * L + i, T.Ramp(chunk * L, 1, L)]
                transpose(tr)
                for j in T.unroll(L):
                    gbin[chunk * L + j, slot, whole] = tr[slot_of, j, whole] * T.Broadcast(scale, L)
                if argmax:
                    if kept:
                        for i in T.unroll(L):
                            atr[1, i, whole] = aux[T.Ramp((k * C + cb * L + i) * P + chunk * L, 1, L)]
                        transpose(atr)
                        for j in T.unroll(L):
                            abin[chunk * L + j, slot, whole] = atr[slot_of, j, whole]
                    else:
                        for j, lane in T.grid(L, L):
                            abin[chunk * L + j, slot, lane] = -1
            for r, lane in T.grid(P % L, L):
                gbin[P - P % L + r, slot, lane] = grad_out[k, cb * L + lane, P - P % L + r] * scale
                if argmax:
                    abin[P - P % L + r, slot, lane] = T.if_then_else(
                        kept, aux[T.min((k * C + cb * L + lane) * P + P - P % L + r, A - 1)], -1)
        else:
            for p, lane in T.grid(P, L):
                c = T.meta_var(T.min(cb * L + lane, C - 1))
                gbin[p, slot, lane] = T.if_then_else(cb * L + lane < C, grad_out[k, c, p], zero) * scale
                if argmax:
                    abin[p, slot, lane] = T.if_then_else(
                        cb * L + lane < C and kept, aux[T.min((k * C + c) * P + p, A - 1)], -1)

    return gather

