"""Calling GPU kernels (contract in `roigen.compute.gpu`) on PyTorch tensors: shared by
the `cuda` and `wgpu` backends, which differ in their launcher (`launch(name, *tensors)`,
`launch.implements(name)`): CUDA tensors go to TVM's CUDA runtime through DLPack (no
copy) on torch's current stream; Vulkan kernels take CPU tensors, staged through host
memory by wgpu.
"""

from __future__ import annotations

import torch

from ..limits import check_table
from ..runtime import TORCH_DTYPES

# Kernels index with int32 (WGSL has no 64-bit integers).
MAX_ELEMENTS = 2**31 - 1


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

    def forward(self, x: torch.Tensor, rois, keep_aux: bool = True, out: torch.Tensor | None = None,
                aux: torch.Tensor | None = None):
        """(output in the compute dtype, flat int32 aux), as every backend's kernels."""
        n, c, h, w = x.shape
        rows = n if rois is None else rois.shape[0]
        data = self._nhwc(x)
        if out is None:
            out = torch.empty(self.spec.kernel_output_shape(x.shape, rows), dtype=self.dtype, device=x.device)
        if aux is None:
            aux = torch.empty(out.numel() if self.spec.aux_outputs and keep_aux else 0, dtype=torch.int32,
                              device=x.device)
        _check_size(data, out)
        boxes = () if rois is None else (rois.to(self.dtype).contiguous(),)
        if boxes:
            self._check_grids(boxes[0], h, w)
        if out.numel():  # a launch of zero blocks is an error on CUDA
            self.launch("forward", data, *boxes, out, aux)
        return out.view(self.spec.output_shape(x.shape, rows)), aux

    def backward(self, grad: torch.Tensor, rois, aux: torch.Tensor, input_shape, deterministic: bool = False,
                 grad_input: torch.Tensor | None = None):
        """d(input) in the compute dtype, shaped (N, C, H, W) with channels_last strides
        (written into `grad_input`, of that shape and strides, if given).

        Scatters with atomic adds where the target has them, unless
        `deterministic`; the deterministic kernel gives the same bits every run.
        """
        n, c, h, w = input_shape
        rows = n if rois is None else rois.shape[0]
        shape = self.spec.kernel_output_shape(input_shape, rows)
        grad = grad.to(self.dtype).reshape(shape).contiguous() if grad.numel() else \
            torch.zeros(shape, dtype=self.dtype, device=grad.device)
        if grad_input is None:
            grad_input = torch.zeros(n, h, w, c, dtype=self.dtype, device=grad.device)
        else:  # the kernels accumulate into zeros
            grad_input = grad_input.permute(0, 2, 3, 1).zero_()
        _check_size(grad, grad_input)
        name = "backward" if deterministic or not self.launch.implements("backward_atomic") else "backward_atomic"
        boxes = () if rois is None else (rois.to(self.dtype).contiguous(),)
        if boxes:
            self._check_grids(boxes[0], h, w)
        if grad.numel() and grad_input.numel():
            self.launch(name, grad, *boxes, aux.contiguous(), grad_input)
        return grad_input.permute(0, 3, 1, 2)

    def backward_boxes(self, x: torch.Tensor, rois: torch.Tensor, output: torch.Tensor, aux: torch.Tensor,
                       grad: torch.Tensor) -> torch.Tensor:
        """d(rois) in the compute dtype, one block per box (deterministic, no atomics)."""
        shape = self.spec.kernel_output_shape(x.shape, rois.shape[0])
        data = self._nhwc(x)
        rois = rois.to(self.dtype).contiguous()
        output = output.to(self.dtype).reshape(shape).contiguous()
        grad = grad.to(self.dtype).reshape(shape).contiguous()
        grad_rois = torch.zeros(rois.shape, dtype=self.dtype, device=rois.device)
        _check_size(data, output)
        self._check_grids(rois, x.shape[2], x.shape[3])
        if rois.shape[0]:
            self.launch("backward_boxes", data, rois, output, aux.contiguous(), grad, grad_rois)
        return grad_rois
