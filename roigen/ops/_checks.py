"""Argument checks and box conversion shared by every op: clear errors, never a bad read."""

from __future__ import annotations

import torch

from ..specs import COMPUTE_DTYPE


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def as_float(value):
    """torchvision takes ints for float parameters; the schema wants floats."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def as_levels(levels):
    """SPP levels as a tuple (the schema's int[]); the spec validates the values."""
    if isinstance(levels, int) or not hasattr(levels, "__iter__"):
        raise TypeError(f"levels must be a sequence of ints, got {levels!r}")
    return tuple(levels)


def check_input(input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) tensor, got shape {tuple(input.shape)}")
    if dtype_name(input.dtype) not in COMPUTE_DTYPE:
        raise TypeError(f"input dtype must be one of {sorted(COMPUTE_DTYPE)}, got {input.dtype}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"input must have H, W >= 1, got shape {tuple(input.shape)}")


def boxes_to_rois(boxes) -> torch.Tensor:
    """torchvision's box formats → a (K, 5) tensor of (batch, x1, y1, x2, y2)."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError("boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], "
                             f"got a tensor of shape {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, torch.Tensor) for b in boxes):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if len(boxes) == 0:
        raise ValueError("boxes must hold one Tensor[L, 4] per image, got an empty list")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must be a Tensor[L, 4], got shape {tuple(b.shape)}")
    flat = torch.cat(list(boxes), dim=0)
    index = torch.cat([torch.full((len(b), 1), i, dtype=flat.dtype, device=flat.device)
                       for i, b in enumerate(boxes)], dim=0)
    return torch.cat([index, flat], dim=1)


def check_rois(rois, input: torch.Tensor, *, values: bool = True) -> None:
    """Rows must index an image of `input` and hold finite coordinates.

    values=False checks metadata alone (shape, device, dtype), which is all a
    traced or fake tensor has.
    """
    if not isinstance(rois, torch.Tensor):
        raise TypeError(f"boxes must be a torch.Tensor, got {type(rois).__name__}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"boxes must be a Tensor[K, 5], got shape {tuple(rois.shape)}")
    if rois.device != input.device:
        raise ValueError(f"boxes are on {rois.device} but input is on {input.device}")
    if rois.dtype != input.dtype:
        raise TypeError(f"boxes dtype {rois.dtype} differs from input dtype {input.dtype}")
    if not values or rois.shape[0] == 0:
        return
    if not bool(torch.isfinite(rois).all()):
        raise ValueError("boxes hold NaN or infinite values")
    batch = rois[:, 0]
    if not bool((batch == batch.trunc()).all()):
        raise ValueError("boxes[:, 0] (the batch index) must hold integers")
    low, high = int(batch.min()), int(batch.max())
    if low < 0 or high >= input.shape[0]:
        raise ValueError(f"boxes[:, 0] (the batch index) must lie in [0, {input.shape[0]}), "
                         f"got values in [{low}, {high}]")
