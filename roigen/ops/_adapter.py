"""How to run an op from its spec's parameters, and its oracle: one adapter for every op.

The benchmarks, the test matrix, the workloads and `roigen generate` all know an
op by its spec class; this turns a spec's parameters into a call of the op's
public function (`roigen.ops.<op>`, whose arguments are the spec's op fields,
with `output_size` for the pooled height and width) or of its oracle, the
function `oracle(params)` in `roigen/ops/<op>.py` returns (a peer library's op,
or None where no peer has these parameters).
"""

from __future__ import annotations

import importlib


def op_module(spec_cls):
    """`roigen/ops/<op>.py`: the op's public function, module and oracle."""
    return importlib.import_module(f"{__package__}.{spec_cls.name}")


def arguments(spec_cls, params: dict) -> dict:
    """The public function's keyword arguments for these spec parameters (op fields)."""
    kwargs = {k: v for k, v in params.items() if k not in ("pooled_height", "pooled_width")}
    if "pooled_height" in params:
        kwargs["output_size"] = (params["pooled_height"], params["pooled_width"])
    return kwargs


def box_arguments(spec_cls, boxes, params: dict) -> tuple:
    """The public function's arguments after `input` for the op's rows `boxes`: the rows, or
    where rows carry per-bin parameters after the box (deform_roi_pool's offsets), what the
    op's `split_rows` makes of them."""
    if not spec_cls.takes_boxes:
        return ()
    if spec_cls.columns_per_bin:
        return op_module(spec_cls).split_rows(boxes, params)
    return (boxes,)


def _run(fn, spec_cls, x, boxes, params: dict, **options):
    return fn(x, *box_arguments(spec_cls, boxes, params), **arguments(spec_cls, params), **options)


def run(spec_cls, x, boxes, params: dict, **options):
    """roigen's op on (x, boxes) with these spec parameters; `options` (target,
    deterministic) go to roigen."""
    return _run(getattr(op_module(spec_cls), spec_cls.name), spec_cls, x, boxes, params, **options)


def oracle(spec_cls, params: dict):
    """The peer's op for these parameters as a function of (x, boxes), or None."""
    fn = op_module(spec_cls).oracle(params)
    return None if fn is None else (lambda x, boxes: _run(fn, spec_cls, x, boxes, params))


def reference(spec_cls, params: dict):
    """roigen's float64 reference (`roigen.reference`) as a function of (x, boxes)."""
    from ..reference import REFERENCES

    return lambda x, boxes: _run(REFERENCES[spec_cls.name], spec_cls, x, boxes, params)


def params_of(spec) -> dict:
    """A spec's op parameters (its op fields) by name."""
    return {f.name: getattr(spec, f.name) for f in spec.op_fields()}
