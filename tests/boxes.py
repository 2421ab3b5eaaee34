"""Random boxes covering the edge cases of ROI_OPS.md, in input-image coordinates."""

from __future__ import annotations

import math

import torch

KINDS = ("inside", "partial", "outside", "tiny", "zero", "huge")


def random_rois(n_images, height, width, count, spatial_scale, gen, *, kinds=KINDS, dtype=torch.float32):
    """(count, 5) rows (batch, x1, y1, x2, y2); kinds cycle so every one appears."""
    wi, hi = width / spatial_scale, height / spatial_scale
    rows = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        if kind == "inside":
            x1, y1 = u[0] * 0.8 * wi, u[1] * 0.8 * hi
            x2, y2 = min(x1 + u[2] * 0.5 * wi + 1, wi - 1), min(y1 + u[3] * 0.5 * hi + 1, hi - 1)
        elif kind == "partial":
            x1, y1 = (u[0] * 1.4 - 0.3) * wi, (u[1] * 1.4 - 0.3) * hi
            x2, y2 = x1 + (0.1 + u[2] * 0.5) * wi, y1 + (0.1 + u[3] * 0.5) * hi
        elif kind == "outside":
            x1, y1 = wi * (1.2 + u[0]), -hi * (1 + u[1])
            x2, y2 = x1 + u[2] * wi, y1 + u[3] * 0.5 * hi
        elif kind == "tiny":
            x1, y1 = u[0] * wi, u[1] * hi
            x2, y2 = x1 + u[2] * 0.5 / spatial_scale, y1 + u[3] * 0.5 / spatial_scale
        elif kind == "zero":
            x1, y1 = u[0] * wi, u[1] * hi
            x2, y2 = x1, y1
        elif kind == "inverted":  # x2 < x1: defined by ROI_OPS.md, crashes torchvision's adaptive path
            x1, y1 = u[0] * wi, u[1] * hi
            x2, y2 = x1 - u[2] * 0.3 * wi, y1 - u[3] * 0.3 * hi
        elif kind == "huge":
            x1, y1 = -wi * u[0], -hi * u[1]
            x2, y2 = x1 + wi * (2 + u[2]), y1 + hi * (2 + u[3])
        else:
            raise ValueError(kind)
        batch = int(torch.randint(0, n_images, (1,), generator=gen))
        rows.append([batch, x1, y1, x2, y2])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5).to(dtype)


def as_rotated(rois: torch.Tensor, gen, *, angle_unit: str = "deg") -> torch.Tensor:
    """(K, 6) rotated boxes (batch, cx, cy, w, h, angle): each box's centre and |size|, at a
    random angle in [-90, 90] degrees (radians for angle_unit="rad")."""
    b, x1, y1, x2, y2 = rois.double().unbind(1)
    angle = (torch.rand(len(rois), generator=gen, dtype=torch.float64) * 180 - 90)
    if angle_unit == "rad":
        angle = angle * math.pi / 180
    rows = torch.stack([b, (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1).abs(), (y2 - y1).abs(), angle], 1)
    return rows.to(rois.dtype)


def with_offsets(rois: torch.Tensor, bins: int, gen, *, extreme: bool = False) -> torch.Tensor:
    """Rows of deformable boxes: each box followed by random offsets for its `bins` bins, x
    then y, in [-1, 1] (shifts of up to gamma = 10 % of the box), or with `extreme` in
    [-1e3, 1e3] (bins far off the box, and off the map)."""
    spread = 1e3 if extreme else 1.0
    offsets = (torch.rand(len(rois), 2 * bins, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    return torch.cat([rois.double(), offsets], 1).to(rois.dtype)
