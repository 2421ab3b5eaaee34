"""The `llvm` runtime: host code for the CPU, one shared library, run by TVM's thread pool.

Tensors cross into TVM through DLPack with no copy: the packed functions take
the torch tensors themselves.  The layout kernels then convert the caller's
memory format into channel blocks, inside TVM's thread pool.
"""

from __future__ import annotations

import functools
import math
import platform
import threading

import numpy as np
import torch

from .._threads import pool_threads, run_in_kernel_thread
from ..limits import SLOPE_TABLE_SCALE, check_table, reserve, table_entries
from ..runtime import TORCH_DTYPES, to_tvm
from .base import Backend, Compiled

# A kernel whose tensors hold less than this runs its parallel loops on the calling thread
# (native.serially): the work costs less than handing half of it to a worker thread, which
# a sleeping worker takes 50-100 us to start.
SERIAL_BYTES = 1 << 16


def _call(fn, *args) -> None:
    size = sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
    tvm_args = [to_tvm(a) if isinstance(a, torch.Tensor) else a for a in args]
    serially = _serially() if size < SERIAL_BYTES else None
    if serially is None:
        run_in_kernel_thread(fn, *tvm_args)
    else:
        run_in_kernel_thread(serially, fn, *tvm_args)


@functools.cache
def _serially():
    """native.serially, or None where this runtime has no native code (a kernel package's
    copy, whose kernels run on TVM's pool)."""
    try:
        from ..native import serially
    except ImportError:
        return None
    return serially


@functools.cache
def _allocator():
    """torch.empty for outputs and per-call tables, or roigen.native's pool of reused memory
    where this runtime has it (a kernel package's copy has no native code).  Tables too: a
    rotated box keeps every sample's corners (6.4 MB for fpn_box's boxes), and fresh pages
    for them took roi_align_rotated's forward from 12.8-13.8 to 14.4-15.2 ms."""
    try:
        from ..native import empty
    except ImportError:
        return lambda shape, dtype: torch.empty(shape, dtype=dtype)
    return empty


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


def fixed_table_entries(spec) -> int:
    """Entries of each box's sample tables when the parameters fix them (sampling_ratio > 0:
    rows and columns of every bin's samples); 0 when the `table_size` kernel counts them."""
    ratio = getattr(spec, "sampling_ratio", 0)  # PrRoIPool's cells depend on the box
    return table_entries(spec, ratio, ratio) if ratio > 0 else 0


class Kernels:
    """One op's compiled module: pack, forward, backward, unpack, and for the
    RoIAlign family the per-box sample tables (table_size, tables)."""

    def __init__(self, spec, params: dict, module, prefix: str = ""):
        """`params`: the CPU schedule's `runtime_params()` (each direction's channel-block
        width and separate layout kernel); `prefix`: the kernels' names in `module` start
        with it (a package holds many ops)."""
        self.spec = spec
        self.lanes = params["lanes"]
        self.layout_pass = params["layout_pass"]
        self.dtype = TORCH_DTYPES[spec.compute_dtype]
        self.fused = {direction: spec.packed and not layout for direction, layout in self.layout_pass.items()}
        names = ["forward", "backward"] + [layout for layout in self.layout_pass.values() if layout]
        self._has_tables = module.implements_function(prefix + "tables")
        if self._has_tables:
            names += ["table_size", "tables"]
        if getattr(spec, "box_gradient", False):
            names.append("backward_boxes")
        # Box gradients run in the forward's (image, block) tasks on its tables; some ops add a
        # table of their own first (box_slopes).
        self._box_slopes = module.implements_function(prefix + "box_slopes")
        if self._box_slopes:
            names.append("box_slopes")
        # Ops whose box-gradient tasks also scatter the map's gradient (backward_with_boxes).
        self.fuses_gradients = module.implements_function(prefix + "backward_with_boxes")
        if self.fuses_gradients:
            names.append("backward_with_boxes")
        self._fn = {name: module[prefix + name] for name in names}

    def _tables(self, rois: torch.Tensor, height: int, width: int) -> tuple:
        """The (K, S) sample tables some ops read, filled once per call; () for others."""
        if not self._has_tables:
            return ()
        entries = self._check_tables(rois, height, width)
        reserve(rois.shape[0] * entries * (4 + self.dtype.itemsize), "the sample tables")
        itab = _allocator()((rois.shape[0], entries), torch.int32)
        ftab = _allocator()((rois.shape[0], entries), self.dtype)
        _call(self._fn["tables"], rois, itab, ftab, height, width)
        return itab, ftab

    def _check_tables(self, rois: torch.Tensor, height: int, width: int) -> int:
        """The entries of each box's sample tables; raises if some box has too many to run."""
        entries = fixed_table_entries(self.spec)
        if not entries:
            size = torch.zeros(1, dtype=torch.int64)
            _call(self._fn["table_size"], rois, size)
            entries = int(size)
        check_table(self.spec, entries, height, width)
        return entries

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
            _call(self._fn[self.layout_pass["forward"]], self._nchw_or_nhwc(x), data)
        else:
            data = x
        if out is None:
            out = _allocator()(self.spec.kernel_output_shape(x.shape, rows), self.dtype)
        if aux is None:
            aux = _allocator()((out.numel() if self.spec.aux_outputs and keep_aux else 0,), torch.int32)
        _call(self._fn["forward"], data, *self._box_args(rois, h, w), out, aux)
        return out.view(self.spec.output_shape(x.shape, rows)), aux

    def backward(self, grad: torch.Tensor, rois, aux: torch.Tensor, input_shape, deterministic: bool = False,
                 grad_input: torch.Tensor | None = None):
        """d(input) in the compute dtype, laid out as the forward input was (packed ops)
        or contiguous NCHW (the others); written into `grad_input` if given (as `out`).

        Deterministic whatever `deterministic` says: each task owns a slice of d(input)."""
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
                grad_input = _allocator()((n, c, h, w), self.dtype)
            _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, grad_input)
            return grad_input
        if grad_input is None:
            grad_input = (_allocator()((n, h, w, c), self.dtype).permute(0, 3, 1, 2) if self.spec.layout == "NHWC"
                          else _allocator()((n, c, h, w), self.dtype))
        if self.fused["backward"]:
            _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, self._nchw_or_nhwc(grad_input))
            return grad_input
        packed = _workspace.get(self._packed_shape("backward", n, c, h, w), self.dtype)
        _call(self._fn["backward"], grad, *self._box_args(rois, h, w), aux, packed)
        _call(self._fn[self.layout_pass["backward"]], packed, self._nchw_or_nhwc(grad_input))
        return grad_input

    def backward_boxes(self, x: torch.Tensor, rois: torch.Tensor, output: torch.Tensor, aux: torch.Tensor,
                       grad: torch.Tensor, with_input: bool = False):
        """d(rois), (K, columns) in the compute dtype (0 for the batch index), from the forward's
        input `x` (as `forward` takes it), its output and aux, and the output's gradient.
        Deterministic: summed from per-(box, block) partial sums in a fixed order
        (compute/cpu/_align_box_gradient.py).  With `with_input` (where `fuses_gradients`),
        (d(input), d(rois)) from one kernel: d(input) laid out as `x`."""
        n, c, h, w = x.shape
        shape = self.spec.kernel_output_shape(x.shape, rois.shape[0])
        grad_rois = torch.empty(rois.shape, dtype=self.dtype)
        output, grad = (t.to(self.dtype).reshape(shape).contiguous() for t in (output, grad))
        lanes = self.lanes["backward"]
        itab, ftab = self._tables(rois, h, w)
        # The kernel's own scratch, bounded: a slab per thread (two with the map's gradient),
        # and per (box, block) four sums per lane and each bin's two (deformable pooling's, the most).
        sums = rois.shape[0] * math.ceil(c / lanes) * (4 * lanes + 2 * math.prod(shape[2:]) + 2 * lanes)
        slabs = h * w * lanes * pool_threads() * (2 if with_input else 1)
        input_bytes = n * c * h * w if with_input else 0
        # box_slopes' table; one column for ops without that kernel (their kernels never read
        # it; a tensor of no columns has strides TVM's argument check refuses).
        slope_shape = (ftab.shape[0], SLOPE_TABLE_SCALE * ftab.shape[1] if self._box_slopes else 1)
        reserve((math.prod(slope_shape) + sums + slabs + input_bytes) * self.dtype.itemsize,
                "the box gradient's slabs and sums")
        slopes = _allocator()(slope_shape, self.dtype)
        if self._box_slopes:
            _call(self._fn["box_slopes"], rois, slopes, h, w)
        args = (self._nchw_or_nhwc(x), rois, itab, ftab, slopes, aux.contiguous(), grad, output,
                visit_order(rois, self.spec.box_columns), grad_rois)
        if not with_input:
            _call(self._fn["backward_boxes"], *args)
            return grad_rois
        grad_input = (_allocator()((n, h, w, c), self.dtype).permute(0, 3, 1, 2) if self.spec.layout == "NHWC"
                      else _allocator()((n, c, h, w), self.dtype))
        _call(self._fn["backward_with_boxes"], *args, self._nchw_or_nhwc(grad_input))
        return grad_input, grad_rois


def visit_order(rois: torch.Tensor, box_columns: int) -> torch.Tensor:
    """The order the box-gradient tasks visit an image's boxes in (int32, K): by the height
    of their centres.  A task holds two slabs, the map's and its gradient's (1.7 MB on
    fpn_box, against 1 MB of L2 a core), and reads a few hundred pixels of each per box:
    boxes that follow each other down the map find more of them still cached (pre-sorted
    boxes ran deform_roi_pool's box kernels on fpn_box 4-8 % faster; docs/PERFORMANCE.md).
    Heights are (y1 + y2) / 2 of (batch, x1, y1, x2, y2) rows, the centre column of rotated
    (batch, cx, cy, w, h, angle) ones; the sort is stable, so equal heights keep their order."""
    rows = rois.detach().numpy()
    height = rows[:, 2] if box_columns == 6 else rows[:, 2] + rows[:, 4]
    return torch.from_numpy(np.argsort(height, kind="stable").astype(np.int32))


class LlvmBackend(Backend):
    name = "llvm"
    device_type = "cpu"
    device_kind = "cpu-model"
    torch_library = True
    skips_rows_without_image = True  # every task tests `rois[k, 0] == n` (compute/cpu/_align.py)

    def runnable(self, target) -> bool:
        from ..target import runnable_here

        return runnable_here(target)

    def compile(self, funcs: dict, target, sched) -> Compiled:
        from ..lower import compile_cpu

        return Compiled(compile_cpu(funcs, target))

    def sources(self, compiled: Compiled) -> dict:
        return {"kernels.s": compiled.executable.mod.inspect_source("asm")}

    def load(self, spec, params: dict, file, prefix: str = ""):
        path = file(self.artifact)
        stat = path.stat()
        return Kernels(spec, params, _library(str(path), stat.st_mtime_ns, stat.st_size), prefix)

    def device_name(self) -> str:
        from ..target import cpu_model

        return cpu_model() or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=64)
def _library(path: str, _mtime_ns: int, _size: int):
    """One loaded module per library file as it is now (a package's specs share one)."""
    # tvm's runtime, not just tvm_ffi's loader: the kernels call its thread pool
    # and workspace allocator (tvm_ffi.load_module alone segfaults at the call).
    import tvm

    module = tvm.runtime.load_module(path)
    try:  # a kernel package's copy of this runtime has no native code: TVM's pool there
        from ..native import run_on_torch_threads
    except ImportError:
        return module
    run_on_torch_threads(path)
    return module


BACKEND = LlvmBackend()
