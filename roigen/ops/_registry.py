"""Generic PyTorch registration: a spec class → `torch.ops.roigen.<op>` and `<op>_backward`.

The schema is derived from the spec's `op_param` fields, so an op is declared
once.  Each op gets a CPU kernel, a fake kernel (shapes only, for
torch.compile and FakeTensor) and autograd that calls the backward op.
"""

from __future__ import annotations

import math

import torch

from ..runtime import channels_last
from ..specs import SPECS, OpSpec
from ._checks import boxes_to_rois, check_input, check_rois, dtype_name

NAMESPACE = "roigen"
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")


def _params_schema(spec_cls: type[OpSpec]) -> str:
    return ", ".join(f"{f.metadata['schema']} {f.name}" for f in spec_cls.op_fields())


def _spec(spec_cls, values, dtype, is_channels_last: bool) -> OpSpec:
    names = [f.name for f in spec_cls.op_fields()]
    return spec_cls(**dict(zip(names, values)), dtype=dtype_name(dtype),
                    layout="NHWC" if is_channels_last else "NCHW")


def _aux_numel(spec: OpSpec, out_shape) -> int:
    return math.prod(out_shape) if spec.aux_outputs else 0


def register(spec_cls: type[OpSpec]) -> None:
    name = spec_cls.name
    qualname = f"{NAMESPACE}::{name}"
    backward_qualname = f"{NAMESPACE}::{name}_backward"
    params = _params_schema(spec_cls)
    torch.library.define(qualname, f"(Tensor input, Tensor rois, {params}) -> (Tensor, Tensor)", lib=_LIB)
    torch.library.define(
        backward_qualname,
        f"(Tensor grad, Tensor rois, Tensor aux, SymInt batch, SymInt channels, SymInt height, "
        f"SymInt width, bool channels_last, {params}) -> Tensor",
        lib=_LIB,
    )

    @torch.library.impl(qualname, "CPU", lib=_LIB)
    def forward_cpu(input, rois, *values):
        from ..build import build

        check_input(input)
        check_rois(rois, input)
        nhwc = channels_last(input)
        spec = _spec(spec_cls, values, input.dtype, nhwc)
        kernels = build(spec)
        x = input.to(kernels.dtype)
        x = x if nhwc else x.contiguous()
        out, aux = kernels.forward(x, rois.to(kernels.dtype).contiguous())
        return out.to(input.dtype), aux

    @torch.library.register_fake(qualname, lib=_LIB)
    def forward_fake(input, rois, *values):
        torch._check(input.dim() == 4, lambda: f"input must be 4-D, got {input.dim()}-D")
        torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "boxes must be a Tensor[K, 5]")
        spec = _spec(spec_cls, values, input.dtype, False)
        shape = spec.output_shape(input.shape, rois.shape[0])
        return input.new_empty(shape), input.new_empty((_aux_numel(spec, shape),), dtype=torch.int32)

    @torch.library.impl(backward_qualname, "CPU", lib=_LIB)
    def backward_cpu(grad, rois, aux, batch, channels, height, width, is_channels_last, *values):
        from ..build import build

        spec = _spec(spec_cls, values, grad.dtype, is_channels_last)
        kernels = build(spec)
        grad_input = kernels.backward(grad.to(kernels.dtype).contiguous(), rois.to(kernels.dtype).contiguous(),
                                      aux.contiguous(), (batch, channels, height, width))
        return grad_input.to(grad.dtype)

    @torch.library.register_fake(backward_qualname, lib=_LIB)
    def backward_fake(grad, rois, aux, batch, channels, height, width, is_channels_last, *values):
        fmt = torch.channels_last if is_channels_last else torch.contiguous_format
        return torch.empty((batch, channels, height, width), dtype=grad.dtype, device=grad.device,
                           memory_format=fmt)

    def setup_context(ctx, inputs, output):
        input, rois, *values = inputs
        ctx.save_for_backward(rois, output[1])
        ctx.input_shape = tuple(input.shape)
        ctx.channels_last = channels_last(input)
        ctx.values = values

    def backward(ctx, grad_output, _grad_aux):
        rois, aux = ctx.saved_tensors
        op = getattr(torch.ops.roigen, f"{name}_backward")
        grad_input = op(grad_output, rois, aux, *ctx.input_shape, ctx.channels_last, *ctx.values)
        return (grad_input, None) + (None,) * len(ctx.values)

    torch.library.register_autograd(qualname, backward, setup_context=setup_context, lib=_LIB)


def call(spec_cls: type[OpSpec], input: torch.Tensor, boxes, **params) -> torch.Tensor:
    """Run an op on tensors through the dispatcher (autograd, compile, fake).

    `params` are the spec's op fields.  Eager calls validate them up front by
    building the spec; under torch.compile the fake kernel builds it instead
    (dynamo does not trace dataclass machinery).
    """
    if not torch.compiler.is_compiling():
        spec_cls(**params)
    rois = boxes_to_rois(boxes)
    check_input(input)
    check_rois(rois, input, values=False)
    out, _ = getattr(torch.ops.roigen, spec_cls.name)(input, rois, *(params[n] for n in _PARAM_NAMES[spec_cls]))
    return out


_PARAM_NAMES = {cls: tuple(f.name for f in cls.op_fields()) for cls in SPECS.values()}
