"""Streaming (non-temporal) stores of a kernel's output runs.

A channel-block task writes each box's run of the output (L channels x the
box's bins, contiguous in torchvision's NCHW) 3 KB at a time at a stride of
C x bins values: fpn_box's 51 MB output goes out in 3 KB pieces 50 KB apart.
With ordinary stores every cache line is first read from memory (a write
allocate) and the scattered pieces defeat the prefetchers: one thread writes
that pattern in 6.0 ms here, against 2.4 ms for a contiguous fill, and
1.5 ms with non-temporal stores, which write whole lines past the caches.
The output is consumed by a later op, after the kernel has moved on, so
keeping it in cache buys nothing for outputs larger than the cache.

TIR has no non-temporal store, so the kernels link three tiny LLVM functions
(`pragma_import_llvm`, which TVM's LLVM code generator inlines): a line's
offset within its 64-byte line, a 64-byte store marked `!nontemporal`
(x86 `vmovntps`, AArch64 `stnp`; other back ends store normally), and a full
fence, which every task issues after its last streaming store (non-temporal
stores are weakly ordered, and the caller reads the output on another thread).
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

LINE = 64  # bytes a streaming store writes, aligned

HELPERS = r"""
define i64 @roigen_line_offset(ptr %p) {
  %a = ptrtoint ptr %p to i64
  %r = and i64 %a, 63
  ret i64 %r
}
define void @roigen_stream_line(ptr %dst, ptr %src) {
  %v = load <8 x i64>, ptr %src, align 1
  store <8 x i64> %v, ptr %dst, align 64, !nontemporal !0
  ret void
}
define void @roigen_stream_fence() {
  fence seq_cst
  ret void
}
!0 = !{i32 1}
"""

# `with T.attr(0, IMPORT, HELPERS):` around a kernel's body links the helpers.
IMPORT = "pragma_import_llvm"


@T.macro
def stream_fence():
    """Orders a task's streaming stores before its end (once per task, after its last)."""
    T.evaluate(T.call_extern("void", "roigen_stream_fence"))


def stream_copy(dtype: str):
    """`copy(dst, d0, src, s0, n)`: n values src[s0:] -> dst[d0:] (flat buffers of
    `dtype`), whole 64-byte lines of dst by streaming stores and the ragged ends by
    ordinary ones."""
    itemsize = tvm.DataType(dtype).bits // 8
    per_line = LINE // itemsize

    @T.macro
    def copy(dst, d0, src, s0, n):
        skew = T.call_extern("int64", "roigen_line_offset", T.address_of(dst[d0]))
        # (A dst not aligned to its values, which no tensor is, streams nothing.)
        head = T.meta_var(T.if_then_else(skew % itemsize == 0, T.min(n, (LINE - skew) % LINE // itemsize), n))
        lines = T.meta_var((n - head) // per_line)
        for i in range(head):
            dst[d0 + i] = src[s0 + i]
        for j in range(lines):
            T.evaluate(T.call_extern("void", "roigen_stream_line", T.address_of(dst[d0 + head + j * per_line]),
                                     T.address_of(src[s0 + head + j * per_line])))
        for i in range(n - head - lines * per_line):
            dst[d0 + head + lines * per_line + i] = src[s0 + head + lines * per_line + i]

    return copy


def streamed(move, lanes: int, dtype: str, shuffle: bool, whole: bool):
    """`move_out(tile, tr, stage, dst, base, cb, C, P, first)`: `move` (_transpose.bin_tile)
    with a full channel block's run leaving by streaming stores, the partial last block
    moving as before.  A bin-major tile (`shuffle`) is transposed into `stage` (a flat
    scratch of lanes x the tile's bins, of `dtype`, the tile's) and streamed from there; a
    channel-major one that holds just this run (`whole`: P bins from 0) is the run already
    and streams as it is.  A channel-major tile of several runs (a pyramid's levels) moves
    as before: copying its rows into `stage` one value at a time cost more than streaming saved.
    """
    L = lanes
    copy = stream_copy(dtype)

    @T.macro
    def move_out(tile, tr, stage, dst, base, cb, C, P, first):
        if (cb + 1) * L <= C and (shuffle or whole):
            if shuffle:
                move(tile, tr, stage, 0, 0, L, P, first)
                copy(dst, base + cb * L * P, stage, 0, L * P)
            else:
                run = T.decl_buffer((L * P,), tile.dtype, data=tile.data)
                copy(dst, base + cb * L * P, run, 0, L * P)
        else:
            move(tile, tr, dst, base, cb, C, P, first)

    return move_out
