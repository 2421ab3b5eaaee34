"""Calling compiled kernels on PyTorch tensors.

Tensors cross into TVM through DLPack with no copy: the packed functions take
the torch tensors themselves.  The layout kernels then convert the caller's
memory format into channel blocks, inside TVM's thread pool.
"""

from __future__ import annotations

import math
import threading

import torch

from ._threads import pool_threads, run_in_kernel_thread
from .limits import check_table, reserve

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The layout kernel of each direction of a packed op; a kernel built with the
# CPU schedule's `fuse` does that conversion itself, and the module lacks it.
LAYOUT_PASS = {"forward": "pack", "backward": "unpack"}


def to_tvm(x: torch.Tensor):
    """A TVM view of a torch tensor's memory (DLPack; no copy)."""
    import tvm_ffi

    return tvm_ffi.from_dlpack(x)


def _call(fn, *args) -> None:
    run_in_kernel_thread(fn, *(to_tvm(a) if isinstance(a, torch.Tensor) else a for a in args))


def channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D map is laid out NHWC (and not also plainly contiguous)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _Workspace(threading.local):
    """Per-thread scratch for packed maps, kept between calls.

    A fresh 10-100 MB buffer per call costs a page fault per 4 KiB on first
    touch, which measured as much as the kernel itself; reuse avoids it.
    """

    def __init__(self):
        self.buffers: dict[torch.dtype, torch.Tensor] = {}

    def get(self, shape, dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(dtype)
        if buf is None or buf.numel() < numel:
            buf = self.buffers[dtype] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


_workspace = _Workspace()


class Kernels:
    """One op's compiled module: pack, forward, backward, unpack, and for the
    RoIAlign family the per-box sample tables (table_size, tables)."""

    def __init__(self, spec, lanes: tuple[int, int], module, prefix: str = ""):
        """`lanes`: the (forward, backward) channel-block widths; `prefix`: the kernels'
        names in `module` start with it (a package holds many ops)."""
        self.spec = spec
        self.lanes = dict(zip(LAYOUT_PASS, lanes))
        self.dtype = TORCH_DTYPES[spec.compute_dtype]
        self.fused = {direction: spec.packed and not module.implements_function(prefix + layout)
                      for direction, layout in LAYOUT_PASS.items()}
        names = ["forward", "backward"] + [layout for direction, layout in LAYOUT_PASS.items()
                                           if spec.packed and not self.fused[direction]]
        self._has_tables = module.implements_function(prefix + "tables")
        if self._has_tables:
            names += ["table_size", "tables"]
        self._fn = {name: module[prefix + name] for name in names}

    def _tables(self, rois: torch.Tensor, height: int, width: int) -> tuple:
        """The (K, S) sample tables some ops read, filled once per call; () for others."""
        if not self._has_tables:
            return ()
        if self.spec.sampling_ratio > 0:  # the same for every box
            entries = 2 * self.spec.sampling_ratio * (self.spec.pooled_height + self.spec.pooled_width)
        else:
            size = torch.zeros(1, dtype=torch.int64)
            _call(self._fn["table_size"], rois, size)
            entries = int(size)
        check_table(self.spec, entries, height, width)
        reserve(rois.shape[0] * entries * (4 + self.dtype.itemsize), "the sample tables")
        itab = torch.empty(rois.shape[0], entries, dtype=torch.int32)
        ftab = torch.empty(rois.shape[0], entries, dtype=self.dtype)
        _call(self._fn["tables"], rois, itab, ftab, height, width)
        return itab, ftab

    def _packed_shape(self, direction: str, n, c, h, w) -> tuple:
        lanes = self.lanes[direction]
        return (n, math.ceil(c / lanes), h, w, lanes)

    def _scratch_bytes(self, direction: str, n, c, h, w) -> int:
        """Memory a direction's kernels use besides their outputs: a fused kernel's
        per-thread slab, or the packed copy of the whole map."""
        if not self.spec.packed:
            return 0
        lanes, itemsize = self.lanes[direction], self.dtype.itemsize
        if self.fused[direction]:
            return h * w * lanes * itemsize * pool_threads()
        return math.prod(self._packed_shape(direction, n, c, h, w)) * itemsize

    def _nchw_or_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """`x` viewed in this build's layout (NHWC as a (N, H, W, C) view)."""
        return x.permute(0, 2, 3, 1) if self.spec.layout == "NHWC" else x

    def _box_args(self, rois, height: int, width: int) -> tuple:
        return () if rois is None else (rois, *self._tables(rois, height, width))

    def forward(self, x: torch.Tensor, rois, keep_aux: bool = True, out: torch.Tensor | None = None,
                aux: torch.Tensor | None = None):
        """The kernel's output (spec.output_shape, compute dtype) and its aux tensor (flat int32).

        `x` is contiguous NCHW, or channels_last when the spec's layout is NHWC;
        `rois` is None for whole-map ops.  With keep_aux False the kernels skip
        the aux tensor (they test its size).  `out`, `aux`: memory for them
        (contiguous, of the shapes this returns), reused by the tuner so that
        page faults on fresh outputs do not swamp what it compares.
        """
        n, c, h, w = x.shape
        rows = n if rois is None else rois.shape[0]
        if out is None:
            numel = math.prod(self.spec.kernel_output_shape(x.shape, rows))
            kept = numel if self.spec.aux_outputs and keep_aux else 0
            reserve(numel * self.dtype.itemsize + kept * 4 + self._scratch_bytes("forward", n, c, h, w),
                    "the output and the kernels' scratch")
        if self.fused["forward"]:
            data = self._nchw_or_nhwc(x)
        elif self.spec.packed:
            data = _workspace.get(self._packed_shape("forward", n, c, h, w), self.dtype)
            _call(self._fn["pack"], self._nchw_or_nhwc(x), data)
        else:
            data = x
        if out is None:
            out = torch.empty(self.spec.kernel_output_shape(x.shape, rows), dtype=self.dtype)
        if aux is None:
            aux = torch.empty(out.numel() if self.spec.aux_outputs and keep_aux else 0, dtype=torch.int32)
        _call(self._fn["forward"], data, *self._box_args(rois, h, w), out, aux)
        return out.view(self.spec.output_shape(x.shape, rows)), aux

    def backward(self, grad: torch.Tensor, rois, aux: torch.Tensor, input_shape,
                 grad_input: torch.Tensor | None = None):
        """d(input) in the compute dtype, laid out as the forward input was (packed ops)
        or contiguous NCHW (the others); written into `grad_input` if given (as `out`)."""
        n, c, h, w = input_shape
        rows = n if rois is None else rois.shape[0]
        shape = self.spec.kernel_output_shape(input_shape, rows)
        if grad_input is None:
            reserve((n * c * h * w) * self.dtype.itemsize + self._scratch_bytes("backward", n, c, h, w),
                    "the input gradient and the kernels' scratch")
        # An empty gradient may carry stride-0 (expanded) strides, which TVM refuses.
        grad = grad.reshape(shape) if grad.numel() else torch.empty(shape, dtype=self.dtype)
        if not self.spec.packed:
            if grad_input is None:
                grad_input = torch.empty(n, c, h, w, dtype=self.dtype)
            _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, grad_input)
            return grad_input
        if grad_input is None:
            fmt = torch.channels_last if self.spec.layout == "NHWC" else torch.contiguous_format
            grad_input = torch.empty(n, c, h, w, dtype=self.dtype, memory_format=fmt)
        if self.fused["backward"]:
            _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, self._nchw_or_nhwc(grad_input))
            return grad_input
        packed = _workspace.get(self._packed_shape("backward", n, c, h, w), self.dtype)
        _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, packed)
        _call(self._fn["unpack"], packed, self._nchw_or_nhwc(grad_input))
        return grad_input
