"""Graph capture: each public op is one leaf call under `torch.fx.symbolic_trace`.

torchvision marks its ops with `torch.fx.wrap`, which patches the name in the
defining module's globals only; roigen's functions are reached as
`roigen.ops.roi_align`, `R.roi_align` or `from roigen.ops import roi_align`,
and traced through they would meet Proxy objects in their argument checks.
So the function itself notices a Proxy argument and records the call.
"""

from __future__ import annotations

import functools

import torch


def _proxy_in(value):
    """The first torch.fx.Proxy in `value` (tensors, lists of boxes, dicts of maps), or None."""
    if isinstance(value, torch.fx.Proxy):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _proxy_in(item)
        if found is not None:
            return found
    return None


def fx_leaf(fn):
    """`fn`, recorded as one `call_function` node when symbolic tracing passes it a Proxy."""

    @functools.wraps(fn)
    def leaf(*args, **kwargs):
        proxy = _proxy_in(args)
        if proxy is None:
            proxy = _proxy_in(kwargs)
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", leaf, args, kwargs)
        return fn(*args, **kwargs)

    return leaf
