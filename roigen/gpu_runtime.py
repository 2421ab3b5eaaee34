"""Calling GPU kernels (contract in `roigen.compute.gpu`) on PyTorch tensors.

`GpuKernels` is the same interface as the CPU `runtime.Kernels`; what differs
is the launcher: CUDA tensors go to TVM's CUDA runtime through DLPack (no
copy) on torch's current stream, and Vulkan kernels take CPU tensors, staged
through host memory by `roigen.vulkan`.
"""

from __future__ import annotations

import torch

from .limits import check_table
from .runtime import TORCH_DTYPES, to_tvm

# Kernels index with int32 (WGSL has no 64-bit integers).
MAX_ELEMENTS = 2**31 - 1


class CudaLauncher:
    """TVM's CUDA module of one build, loaded on first use (loading needs a GPU driver)
    with the cubin nvcc made at build time (see roigen.cuda)."""

    def __init__(self, library, source, cubin, prefix: str = ""):
        self.paths = (str(library), source, cubin)
        self.prefix = prefix
        self._module = None

    def _load(self):
        if self._module is None:
            import tvm

            from .cuda import provide_cubin

            library, source, cubin = self.paths
            provide_cubin(source.read_text(), cubin.read_bytes())
            self._module = tvm.runtime.load_module(library)
        return self._module

    def implements(self, name: str) -> bool:
        return self._load().implements_function(self.prefix + name)

    def __call__(self, name: str, *tensors: torch.Tensor) -> None:
        import tvm_ffi

        fn = self._load()[self.prefix + name]
        with tvm_ffi.use_torch_stream():
            fn(*(to_tvm(t) for t in tensors))


class VulkanLauncher:
    def __init__(self, module, prefix: str = ""):
        self.module = module
        self.prefix = prefix

    def implements(self, name: str) -> bool:
        return self.module.implements(self.prefix + name)

    def __call__(self, name: str, *tensors: torch.Tensor) -> None:
        self.module[self.prefix + name](*tensors)


def _check_size(*tensors) -> None:
    for t in tensors:
        if t.numel() > MAX_ELEMENTS:
            raise ValueError(f"GPU kernels index with int32: a tensor of {t.numel()} elements is too large "
                             f"(limit {MAX_ELEMENTS}); split the batch")


class GpuKernels:
    def __init__(self, spec, launch):
        self.spec = spec
        self.launch = launch
        self.dtype = TORCH_DTYPES[spec.compute_dtype]

    def _nhwc(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype).permute(0, 2, 3, 1).contiguous()

    def _check_grids(self, rois: torch.Tensor, height: int, width: int) -> None:
        """Refuse boxes whose adaptive sample grid is too large to run (as the CPU's tables)."""
        if rois.shape[0] == 0 or not self.launch.implements("grid_size"):
            return
        sizes = torch.empty(rois.shape[0], 2, dtype=torch.int32, device=rois.device)
        self.launch("grid_size", rois, sizes)
        ph, pw = self.spec.pooled_size
        entries = 2 * int((ph * sizes[:, 0].long() + pw * sizes[:, 1].long()).max())
        check_table(self.spec, entries, height, width)

    def forward(self, x: torch.Tensor, rois, keep_aux: bool = True):
        """(output in the compute dtype, flat int32 aux) as `runtime.Kernels.forward`."""
        n, c, h, w = x.shape
        rows = n if rois is None else rois.shape[0]
        data = self._nhwc(x)
        out = torch.empty(self.spec.kernel_output_shape(x.shape, rows), dtype=self.dtype, device=x.device)
        aux = torch.empty(out.numel() if self.spec.aux_outputs and keep_aux else 0, dtype=torch.int32,
                          device=x.device)
        _check_size(data, out)
        boxes = () if rois is None else (rois.to(self.dtype).contiguous(),)
        if boxes:
            self._check_grids(boxes[0], h, w)
        if out.numel():  # a launch of zero blocks is an error on CUDA
            self.launch("forward", data, *boxes, out, aux)
        return out.view(self.spec.output_shape(x.shape, rows)), aux

    def backward(self, grad: torch.Tensor, rois, aux: torch.Tensor, input_shape, deterministic: bool = False):
        """d(input) in the compute dtype, shaped (N, C, H, W) with channels_last strides.

        Scatters with atomic adds where the target has them, unless
        `deterministic`; the deterministic kernel gives the same bits every run.
        """
        n, c, h, w = input_shape
        rows = n if rois is None else rois.shape[0]
        shape = self.spec.kernel_output_shape(input_shape, rows)
        grad = grad.to(self.dtype).reshape(shape).contiguous() if grad.numel() else \
            torch.zeros(shape, dtype=self.dtype, device=grad.device)
        grad_input = torch.zeros(n, h, w, c, dtype=self.dtype, device=grad.device)
        _check_size(grad, grad_input)
        name = "backward" if deterministic or not self.launch.implements("backward_atomic") else "backward_atomic"
        boxes = () if rois is None else (rois.to(self.dtype).contiguous(),)
        if boxes:
            self._check_grids(boxes[0], h, w)
        if grad.numel() and grad_input.numel():
            self.launch(name, grad, *boxes, aux.contiguous(), grad_input)
        return grad_input.permute(0, 3, 1, 2)
