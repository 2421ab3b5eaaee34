"""The ops under `torch.autocast`, as torchvision's: half-precision maps and float32
boxes run in float32 (float64 stays float64), and the output returns in the maps' dtype."""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def _widened(value):
    if isinstance(value, (list, tuple)):
        return type(value)(_widened(v) for v in value)
    if isinstance(value, torch.Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def autocast_kernel(qualname: str, device_type: str):
    """The Autocast<device> kernel of op `qualname`, whose first argument is the map (or
    a list of maps) and whose first result is the output (alone, or with its aux)."""
    namespace, name = qualname.split("::")

    def forward_autocast(input, *args, **kwargs):
        dtype = (input[0] if isinstance(input, (list, tuple)) else input).dtype
        with torch.autocast(device_type, enabled=False):
            result = getattr(getattr(torch.ops, namespace), name)(_widened(input), *_widened(args), **kwargs)
        if isinstance(result, tuple):
            return (result[0].to(dtype), *result[1:])
        return result.to(dtype)

    return forward_autocast


def dtypes_meet_under_autocast(device_type: str, a: torch.dtype, b: torch.dtype) -> bool:
    """Whether autocast's kernel will bring maps of dtype `a` and boxes of dtype `b` to float32."""
    return torch.is_autocast_enabled(device_type) and {a, b} <= {*_HALF, torch.float32}
