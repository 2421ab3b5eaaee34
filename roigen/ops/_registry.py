"""Generic PyTorch registration: a spec class → `torch.ops.roigen.<op>` and `<op>_backward`.

The schema is derived from the spec's `op_param` fields, so an op is declared
once.  Each op gets CPU and CUDA kernels, a fake kernel (shapes only, for
torch.compile and FakeTensor) and autograd that calls the backward op.

Every forward also takes `target` ("auto": the host CPU for CPU tensors, the
device's CUDA target for CUDA tensors; or a target name such as "vulkan",
which takes CPU tensors) and `deterministic` (GPU backward without atomics;
also chosen by `torch.use_deterministic_algorithms(True)`).
"""

from __future__ import annotations

import math

import torch

from .. import NAMESPACE
from ..backends import backend_for
from ..runtime import channels_last
from ..specs import SPECS, OpSpec
from ..target import target_environment
from . import _provider
from ._autocast import autocast_kernel
from ._checks import boxes_to_rois, check_backward_args, check_input, check_rois, check_rois_for, dtype_name

_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")


def ops_namespace():
    """`torch.ops.<NAMESPACE>`: roigen's ops, or a generated package's."""
    return getattr(torch.ops, NAMESPACE)


def _params_schema(spec_cls: type[OpSpec]) -> str:
    return ", ".join(f"{f.metadata['schema']} {f.name}" for f in spec_cls.op_fields())


def _spec(spec_cls, values, dtype, is_channels_last: bool, target=None) -> OpSpec:
    """The spec of the kernels to run: in the layout the target's backend runs this input in
    (without a target, as the input is laid out: the shapes are the same)."""
    layout = backend_for(target).layout(spec_cls, is_channels_last) if target is not None else \
        ("NHWC" if is_channels_last and spec_cls.packed else "NCHW")
    return spec_cls(**dict(zip(_PARAM_NAMES[spec_cls], values)), dtype=dtype_name(dtype), layout=layout)


class _Plan:
    """What a call with given op parameters, dtype, layout, target and device runs: the target,
    the spec, and its kernels once asked for (built or loaded on first use).

    Worked out once per combination: between large kernels, with cold caches, resolving the
    target, building the spec and looking up its kernels took 0.4 ms a call."""

    __slots__ = ("target", "spec", "columns", "_kernels")

    def __init__(self, target, spec):
        self.target, self.spec, self.columns = target, spec, spec.row_columns
        self._kernels = None

    def kernels(self):
        if self._kernels is None:
            self._kernels = _provider.kernels(self.spec, self.target)
        return self._kernels


_PLANS: dict[tuple, _Plan] = {}
# Combinations kept at most: beyond it the cache starts over (a sweep over many parameters).
_MAX_PLANS = 1024


def _plan(spec_cls, values, dtype, is_channels_last: bool, target_name: str, device) -> _Plan:
    """The plan of a call (see _Plan); invalid parameters or targets raise, as building the
    spec or selecting the target does, and are not kept."""
    values = _hashable(values)
    key = (spec_cls, values, dtype, is_channels_last, target_name, device, target_environment())
    plan = _PLANS.get(key)
    if plan is None:
        target = _provider.select_target(target_name, device)
        plan = _Plan(target, _spec(spec_cls, values, dtype, is_channels_last, target))
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _hashable(values) -> tuple:
    """Op parameter values as a key: lists (the schema's int[]) as tuples."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


# Op parameters `call` has seen build a spec, by op: each set is validated once.
_VALID_PARAMS: set[tuple] = set()


def _validate(spec_cls, params: dict) -> None:
    """Raise as building the spec does if `params` are not the op's valid parameters; each
    combination is checked once."""
    # With the types: 7.0 == 7 and 1 == True, but the spec refuses a float size or an int flag.
    key = (spec_cls, tuple(params), _hashable(params.values()), tuple(type(v) for v in params.values()))
    try:
        if key in _VALID_PARAMS:
            return
    except TypeError:  # an unhashable value: the spec names it
        spec_cls(**params)
        return
    spec_cls(**params)
    if len(_VALID_PARAMS) >= _MAX_PLANS:
        _VALID_PARAMS.clear()
    _VALID_PARAMS.add(key)


def _row_columns(spec_cls, values) -> int:
    """Columns of a rois row for these op parameters (the spec's `columns_of`)."""
    return spec_cls.columns_of(dict(zip(_PARAM_NAMES[spec_cls], values)))


def _split(spec_cls, args):
    """(tensor, rois or None, params) from an op's positional arguments."""
    if spec_cls.takes_boxes:
        return args[0], args[1], args[2:]
    return args[0], None, args[1:]


# Trailing forward arguments with defaults, which may come positionally or as keywords.
_OPTIONS = (("keep_aux", True), ("target", "auto"), ("deterministic", False))


def _forward_args(spec_cls, args, kwargs):
    """(tensor, rois or None, params, options dict)."""
    input, rois, rest = _split(spec_cls, args)
    count = len(_PARAM_NAMES[spec_cls])
    given = rest[count:]
    options = {key: kwargs.get(key, given[i] if i < len(given) else default)
               for i, (key, default) in enumerate(_OPTIONS)}
    return input, rois, tuple(rest[:count]), options


def register(spec_cls: type[OpSpec]) -> None:
    name = spec_cls.name
    qualname = f"{NAMESPACE}::{name}"
    backward_qualname = f"{NAMESPACE}::{name}_backward"
    params = _params_schema(spec_cls)
    rois_arg = "Tensor rois, " if spec_cls.takes_boxes else ""
    # keep_aux=False (inference: no gradient will be asked for) skips writing the
    # argmax tensor some ops keep for backward, as large as the output itself.
    torch.library.define(qualname, f"(Tensor input, {rois_arg}{params}, bool keep_aux=True, "
                         'str target="auto", bool deterministic=False) -> (Tensor, Tensor)', lib=_LIB)
    torch.library.define(
        backward_qualname,
        f"(Tensor grad, {rois_arg}Tensor aux, SymInt batch, SymInt channels, SymInt height, "
        f"SymInt width, bool channels_last, {params}, str target, bool deterministic) -> Tensor",
        lib=_LIB,
    )

    def forward_impl(*args, **kwargs):
        input, rois, values, options = _forward_args(spec_cls, args, kwargs)
        check_input(input)
        plan = _plan(spec_cls, values, input.dtype, channels_last(input), options["target"], input.device)
        spec = plan.spec
        if rois is not None:
            check_rois(rois, input, columns=plan.columns, nonnegative=spec.nonnegative_box_columns)
        spec.check_input_shape(input.shape)
        rows = input.shape[0] if rois is None else rois.shape[0]
        shape = spec.output_shape(input.shape, rows)
        if input.numel() == 0 or math.prod(shape) == 0:  # no channels, no boxes: nothing to run
            aux = math.prod(shape) if spec.aux_outputs and options["keep_aux"] else 0
            return input.new_zeros(shape), torch.zeros(aux, dtype=torch.int32, device=input.device)
        kernels = plan.kernels()
        x = input.to(kernels.dtype)
        x = x if spec.layout == "NHWC" else x.contiguous()
        boxes = None if rois is None else rois.to(kernels.dtype).contiguous()
        out, aux = kernels.forward(x, boxes, options["keep_aux"])
        return out.to(input.dtype), aux

    @torch.library.register_fake(qualname, lib=_LIB)
    def forward_fake(*args, **kwargs):
        input, rois, values, options = _forward_args(spec_cls, args, kwargs)
        torch._check(input.dim() == 4, lambda: f"input must be 4-D, got {input.dim()}-D")
        spec = _spec(spec_cls, values, input.dtype, False)
        if rois is not None:
            columns = spec.row_columns
            torch._check(rois.dim() == 2 and rois.shape[1] == columns, lambda: f"boxes must be a Tensor[K, {columns}]")
        rows = rois.shape[0] if rois is not None else input.shape[0]
        shape = spec.output_shape(input.shape, rows)
        aux = math.prod(shape) if spec.aux_outputs and options["keep_aux"] else 0
        return input.new_empty(shape), input.new_empty((aux,), dtype=torch.int32)

    def backward_impl(*args):
        grad, rois, rest = _split(spec_cls, args)
        aux, batch, channels, height, width, is_channels_last, *values, target_name, deterministic = rest
        shape = (batch, channels, height, width)
        # A public op: its arguments may be forged, so check all a kernel will read.
        check_backward_args(grad, rois, aux, shape, grad.device, _row_columns(spec_cls, values))
        plan = _plan(spec_cls, values, grad.dtype, is_channels_last, target_name, grad.device)
        spec = plan.spec
        spec.check_input_shape(shape)
        rows = batch if rois is None else rois.shape[0]
        out_shape = spec.output_shape(shape, rows)
        if tuple(grad.shape) != out_shape:
            raise ValueError(f"grad has shape {tuple(grad.shape)}, expected the output's shape {out_shape}")
        if spec.aux_outputs and aux.numel() != math.prod(out_shape):  # the kernel would read past it
            raise ValueError(f"aux holds {aux.numel()} values, expected {math.prod(out_shape)}: "
                             "the forward ran with keep_aux=False")
        fmt = torch.channels_last if is_channels_last else torch.contiguous_format
        if grad.numel() == 0 or math.prod(shape) == 0:  # nothing flows back
            return torch.zeros(shape, dtype=grad.dtype, device=grad.device).contiguous(memory_format=fmt)
        kernels = plan.kernels()
        rois = None if rois is None else rois.to(kernels.dtype).contiguous()
        grad = grad.to(kernels.dtype).contiguous()
        deterministic = deterministic or torch.are_deterministic_algorithms_enabled()
        grad_input = kernels.backward(grad, rois, aux.contiguous(), shape, deterministic)
        return grad_input.to(grad.dtype).contiguous(memory_format=fmt)

    for key in ("CPU", "CUDA"):
        torch.library.impl(qualname, key, forward_impl, lib=_LIB)
        torch.library.impl(backward_qualname, key, backward_impl, lib=_LIB)
        torch.library.impl(qualname, f"Autocast{key}", autocast_kernel(qualname, key.lower()), lib=_LIB)

    @torch.library.register_fake(backward_qualname, lib=_LIB)
    def backward_fake(*args):
        grad, _, rest = _split(spec_cls, args)
        _, batch, channels, height, width, is_channels_last, *_ = rest
        fmt = torch.channels_last if is_channels_last else torch.contiguous_format
        return torch.empty((batch, channels, height, width), dtype=grad.dtype, device=grad.device,
                           memory_format=fmt)

    if spec_cls.box_gradient:
        _register_box_gradient(spec_cls, params)

    def setup_context(ctx, inputs, output):
        input, rois, values, options = _forward_args(spec_cls, inputs, {})
        # Otherwise autograd fills a zero "gradient" for the int32 aux output on
        # every backward (43 MB for spp_window: most of its backward time).
        ctx.set_materialize_grads(False)
        # The box gradient reads the map, the output and aux; boxes that need no gradient keep
        # none of them beyond what the input gradient keeps.
        ctx.box_gradient = spec_cls.box_gradient and rois is not None and rois.requires_grad
        extra = [input, output[0]] if ctx.box_gradient else []
        ctx.save_for_backward(*([rois] if rois is not None else []), output[1], *extra)
        ctx.input_shape = tuple(input.shape)
        ctx.channels_last = channels_last(input)
        ctx.values = values
        ctx.options = (options["target"], options["deterministic"])
        # keep_aux is True whenever a gradient can flow (see call()).
        ctx.grads_count = len(inputs)

    def backward(ctx, grad_output, _grad_aux):
        if grad_output is None:
            return (None,) * ctx.grads_count
        saved = ctx.saved_tensors
        if ctx.box_gradient:
            saved, (input, output) = saved[:-2], saved[-2:]
        grad_input = grad_rois = None
        boxes = ctx.box_gradient and ctx.needs_input_grad[1]
        if ctx.needs_input_grad[0] and boxes:  # both from one pass over the samples
            op = getattr(ops_namespace(), f"{name}_backward_with_boxes")
            grad_input, grad_rois = op(grad_output, input, saved[0], output, saved[1], *ctx.values, *ctx.options)
        elif ctx.needs_input_grad[0]:
            op = getattr(ops_namespace(), f"{name}_backward")
            grad_input = op(grad_output, *saved, *ctx.input_shape, ctx.channels_last, *ctx.values, *ctx.options)
        elif boxes:
            op = getattr(ops_namespace(), f"{name}_backward_boxes")
            grad_rois = op(grad_output, input, saved[0], output, saved[1], *ctx.values, ctx.options[0])
        return (grad_input, grad_rois) + (None,) * (ctx.grads_count - 2)

    torch.library.register_autograd(qualname, backward, setup_context=setup_context, lib=_LIB)


def _register_box_gradient(spec_cls: type[OpSpec], params: str) -> None:
    """`<op>_backward_boxes`: d(loss)/d(rois) from the output's gradient, the map, the output
    and aux (the batch-index column gets 0); `<op>_backward_with_boxes`: (d(loss)/d(input),
    d(loss)/d(rois)) from the same, in one kernel where the target's backend has one."""
    qualname = f"{NAMESPACE}::{spec_cls.name}_backward_boxes"
    both_qualname = f"{NAMESPACE}::{spec_cls.name}_backward_with_boxes"
    args = f"(Tensor grad, Tensor input, Tensor rois, Tensor output, Tensor aux, {params}, str target"
    torch.library.define(qualname, f"{args}) -> Tensor", lib=_LIB)
    torch.library.define(both_qualname, f"{args}, bool deterministic) -> (Tensor, Tensor)", lib=_LIB)

    def prepare(grad, input, rois, output, aux, values, target_name):
        """(spec, kernels, map, rois, aux) in the kernels' dtype, or None where the output is empty."""
        # A public op: its arguments may be forged, so check all a kernel will read.
        check_input(input)
        check_rois_for(rois, input.shape[0], input.device, input.dtype, name="rois",
                       columns=_row_columns(spec_cls, values))
        plan = _plan(spec_cls, values, input.dtype, channels_last(input), target_name, input.device)
        spec = plan.spec
        shape = spec.output_shape(input.shape, rois.shape[0])
        for arg, tensor in (("grad", grad), ("output", output)):
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape or tensor.device != input.device:
                raise ValueError(f"{arg} must be the output's shape {shape} on {input.device}, got "
                                 f"{tuple(getattr(tensor, 'shape', ()))}")
        if spec.aux_outputs and (not isinstance(aux, torch.Tensor) or aux.dtype != torch.int32
                                 or aux.device != input.device or aux.numel() != math.prod(shape)):
            raise ValueError(f"aux must be the forward's int32 argmax of {math.prod(shape)} values on "
                             f"{input.device} (the forward ran with keep_aux=False?)")
        if math.prod(shape) == 0 or input.numel() == 0:
            return None
        kernels = plan.kernels()
        x = input.to(kernels.dtype)
        x = x if spec.layout == "NHWC" else x.contiguous()
        aux = aux if spec.aux_outputs else torch.empty(0, dtype=torch.int32, device=input.device)
        return spec, kernels, x, rois.to(kernels.dtype).contiguous(), aux

    def impl(grad, input, rois, output, aux, *rest):
        *values, target_name = rest
        prepared = prepare(grad, input, rois, output, aux, values, target_name)
        if prepared is None:
            return torch.zeros_like(rois)
        _, kernels, x, boxes, aux = prepared
        return kernels.backward_boxes(x, boxes, output, aux, grad).to(rois.dtype)

    def both_impl(grad, input, rois, output, aux, *rest):
        *values, target_name, deterministic = rest
        prepared = prepare(grad, input, rois, output, aux, values, target_name)
        fmt = torch.channels_last if channels_last(input) else torch.contiguous_format
        if prepared is None:
            return torch.zeros_like(input, memory_format=fmt), torch.zeros_like(rois)
        spec, kernels, x, boxes, aux = prepared
        if getattr(kernels, "fuses_gradients", False):
            grad_input, grad_rois = kernels.backward_boxes(x, boxes, output, aux, grad, with_input=True)
        else:
            deterministic = deterministic or torch.are_deterministic_algorithms_enabled()
            grad_input = kernels.backward(grad.to(kernels.dtype).contiguous(), boxes, aux.contiguous(),
                                          tuple(input.shape), deterministic)
            grad_rois = kernels.backward_boxes(x, boxes, output, aux, grad)
        return grad_input.to(input.dtype).contiguous(memory_format=fmt), grad_rois.to(rois.dtype)

    for key in ("CPU", "CUDA"):
        torch.library.impl(qualname, key, impl, lib=_LIB)
        torch.library.impl(both_qualname, key, both_impl, lib=_LIB)

    @torch.library.register_fake(qualname, lib=_LIB)
    def fake(grad, input, rois, output, aux, *rest):
        return torch.empty_like(rois)

    @torch.library.register_fake(both_qualname, lib=_LIB)
    def both_fake(grad, input, rois, output, aux, *rest):
        return torch.empty_like(input), torch.empty_like(rois)


def call(spec_cls: type[OpSpec], input: torch.Tensor, boxes, *, target: str = "auto",
         deterministic: bool = False, **params) -> torch.Tensor:
    """Run an op on tensors through the dispatcher (autograd, compile, fake).

    `params` are the spec's op fields.  Eager calls validate them up front by
    building the spec; under torch.compile the fake kernel builds it instead
    (dynamo does not trace dataclass machinery).
    """
    if not torch.compiler.is_compiling():
        _validate(spec_cls, params)
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be bool, got {deterministic!r}")
        if not isinstance(target, str):
            raise TypeError(f"target must be a target name, got {target!r}")
    check_input(input)
    args = [input]
    if spec_cls.takes_boxes:
        columns = spec_cls.columns_of(params)
        rois = boxes_to_rois(boxes, columns)
        check_rois(rois, input, values=False, columns=columns)
        args.append(rois)
    keep_aux = torch.is_grad_enabled() and (input.requires_grad or (
        spec_cls.box_gradient and spec_cls.takes_boxes and args[1].requires_grad))
    op = getattr(ops_namespace(), spec_cls.name)
    out, _ = op(*args, *(params[n] for n in _PARAM_NAMES[spec_cls]), keep_aux, target, deterministic)
    return out


_PARAM_NAMES = {cls: tuple(f.name for f in cls.op_fields()) for cls in SPECS.values()}
