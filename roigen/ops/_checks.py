"""Argument checks and box conversion shared by every op: clear errors, never a bad read."""

from __future__ import annotations

import torch

from ..specs import COMPUTE_DTYPE
from ._autocast import dtypes_meet_under_autocast


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


def boxes_to_rois(boxes, columns: int = 5) -> torch.Tensor:
    """torchvision's box formats → a (K, columns) tensor of (batch, box...): (batch, x1, y1, x2, y2),
    or for rotated boxes (columns 6) (batch, cx, cy, w, h, angle)."""
    row, per_image = f"Tensor[K, {columns}]", f"Tensor[L, {columns - 1}]"
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != columns:
            raise ValueError(f"boxes must be a {row} or a list of {per_image}, "
                             f"got a tensor of shape {tuple(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, torch.Tensor) for b in boxes):
        raise TypeError(f"boxes must be a {row} or a list of {per_image}, got {type(boxes).__name__}")
    if len(boxes) == 0:
        raise ValueError(f"boxes must hold one {per_image} per image, got an empty list")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != columns - 1:
            raise ValueError(f"boxes[{i}] must be a {per_image}, got shape {tuple(b.shape)}")
    flat = torch.cat(list(boxes), dim=0)
    index = torch.cat([torch.full((b.shape[0], 1), i, dtype=flat.dtype, device=flat.device)
                       for i, b in enumerate(boxes)], dim=0)
    return torch.cat([index, flat], dim=1)


def check_rois(rois, input: torch.Tensor, *, values: bool = True, columns: int = 5,
               nonnegative: tuple[int, ...] = ()) -> None:
    """Rows must index an image of `input` and hold finite coordinates.

    values=False checks metadata alone (shape, device, dtype), which is all a
    traced or fake tensor has.  Under torch.autocast, half-precision maps may
    meet float32 boxes: the op's autocast kernel brings both to float32.
    """
    dtype = input.dtype
    if isinstance(rois, torch.Tensor) and dtypes_meet_under_autocast(input.device.type, dtype, rois.dtype):
        dtype = rois.dtype
    check_rois_for(rois, input.shape[0], input.device, dtype, values=values, columns=columns,
                   nonnegative=nonnegative)


def check_rois_for(rois, batch: int, device, dtype, *, values: bool = True, name: str = "boxes",
                   columns: int = 5, nonnegative: tuple[int, ...] = ()) -> None:
    """`check_rois` against a map described by its batch size, device and dtype.  `nonnegative`:
    columns whose values must be >= 0 (a rotated box's w and h)."""
    if not isinstance(rois, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(rois).__name__}")
    if rois.dim() != 2 or rois.shape[1] != columns:
        raise ValueError(f"{name} must be a Tensor[K, {columns}], got shape {tuple(rois.shape)}")
    if rois.device != device:
        raise ValueError(f"{name} are on {rois.device} but input is on {device}")
    if rois.dtype != dtype:
        raise TypeError(f"{name} dtype {rois.dtype} differs from input dtype {dtype}")
    if not values or rois.shape[0] == 0 or _rows_ok(rois, batch, nonnegative):
        return
    if not bool(torch.isfinite(rois).all()):
        raise ValueError(f"{name} hold NaN or infinite values")
    index = rois[:, 0]
    if not bool((index == index.trunc()).all()):
        raise ValueError(f"{name}[:, 0] (the batch index) must hold integers")
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= batch:
        raise ValueError(f"{name}[:, 0] (the batch index) must lie in [0, {batch}), "
                         f"got values in [{low}, {high}]")
    for col in nonnegative:
        if bool((rois[:, col] < 0).any()):
            raise ValueError(f"{name}[:, {col}] (a box size) must be >= 0 with aligned=True, got "
                             f"{float(rois[:, col].min())}")


def _rows_ok(rois: torch.Tensor, batch: int, nonnegative: tuple[int, ...]) -> bool:
    """The value checks below in one native pass where roigen.native has it (a kernel package's
    copy of the ops has not): between large kernels, with cold caches, the torch ops below
    took 0.4 ms a call.  False means "not shown to pass": the torch ops then decide."""
    try:
        from ..native import rows_ok
    except ImportError:
        return False
    try:
        return rows_ok(rois, batch, nonnegative)
    except (RuntimeError, OSError):  # the runtime could not be compiled or loaded
        return False


def check_backward_args(grad, rois, aux, shape, device, columns: int = 5) -> None:
    """The arguments of a public `*_backward` op, which anyone can call with anything:
    every tensor a kernel reads must be what the forward would have saved."""
    if not isinstance(grad, torch.Tensor) or dtype_name(grad.dtype) not in COMPUTE_DTYPE:
        raise TypeError(f"grad must be a floating-point tensor of {sorted(COMPUTE_DTYPE)}, got "
                        f"{getattr(grad, 'dtype', type(grad).__name__)}")
    if not isinstance(aux, torch.Tensor) or aux.dtype != torch.int32 or aux.device != device:
        raise TypeError(f"aux must be the forward's int32 aux tensor on {device}, got "
                        f"{getattr(aux, 'dtype', type(aux).__name__)}")
    batch, channels, height, width = shape
    if batch < 0 or channels < 0 or height < 1 or width < 1:
        raise ValueError(f"batch, channels, height, width must be the input's shape (N, C >= 0; H, W >= 1), "
                         f"got {tuple(shape)}")
    if rois is not None:
        check_rois_for(rois, batch, device, grad.dtype, name="rois", columns=columns)
