"""IoU-Net-style box refinement through prroi_pool's box gradient (`roigen demo` ends with it).

IoU-Net (Jiang et al., ECCV 2018) refines a detection by gradient ascent on its
predicted IoU with respect to the box, which needs a pooling that is continuous
in the box: Precise RoI Pooling.  Here the "predictor" is exact instead of
learned: the map is an object's indicator (1 on its pixels, 0 elsewhere), so
PrRoIPool's mean over a box, times the box's area, is the box's intersection
with the object's bilinear surface; the surface's integral is the object's area;
and IoU = I / (box area + object area - I) is a differentiable function of the
box.  Ascending it moves each box onto the object.
"""

from __future__ import annotations

import torch

# The object: pixels [OBJECT[0], OBJECT[2]] x [OBJECT[1], OBJECT[3]] (x1, y1, x2, y2, inclusive).
OBJECT = (20, 14, 44, 40)
SIZE = 64


def object_map() -> torch.Tensor:
    x1, y1, x2, y2 = OBJECT
    m = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    m[..., y1:y2 + 1, x1:x2 + 1] = 1.0
    return m


def iou(boxes: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Each box's IoU with the object's bilinear surface, through prroi_pool (differentiable
    in the boxes).  A pixel's surface spans one pixel either side, so the object's area is
    its pixel count: the surface's integral."""
    from .ops import prroi_pool

    mean = prroi_pool(features, boxes, 1, 1.0).flatten()
    x1, y1, x2, y2 = boxes[:, 1:].unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    inter = mean * area
    return inter / (area + features.sum() - inter)


def refine(boxes: torch.Tensor, steps: int = 60, lr: float = 1.0):
    """Adam ascent on the boxes' IoU; yields (step, boxes, IoU) every 10 steps and at the end."""
    features = object_map()
    index, coords = boxes[:, :1].double(), boxes[:, 1:].double().clone().requires_grad_()
    optimiser = torch.optim.Adam([coords], lr=lr)
    for step in range(steps + 1):
        score = iou(torch.cat([index, coords], 1), features)
        if step % 10 == 0 or step == steps:
            yield step, coords.detach().clone(), score.detach().clone()
        if step < steps:
            optimiser.zero_grad()
            (-score.sum()).backward()
            optimiser.step()


def demo(out=print) -> bool:
    """Three boxes off the object, refined; whether every one ended near it (IoU > 0.9)."""
    start = torch.tensor([[0, 6.0, 4.0, 30.0, 26.0], [0, 28.0, 25.0, 60.0, 58.0], [0, 18.0, 20.0, 34.0, 50.0]])
    # The surface is 1 between the object's first and last pixel centres and falls to 0 one
    # pixel out; the box of the same area is the pixels' own extent, centres +- 0.5.
    x1, y1, x2, y2 = OBJECT
    out(f"box refinement through prroi_pool's box gradient (IoU-Net style): object at "
        f"({x1 - 0.5}, {y1 - 0.5}, {x2 + 0.5}, {y2 + 0.5}) on a {SIZE}x{SIZE} map")
    last = None
    for step, coords, score in refine(start):
        shown = "  ".join(f"({', '.join(f'{v:5.1f}' for v in box)}) IoU {s:.3f}" for box, s in zip(coords, score))
        out(f"  step {step:3d}: {shown}")
        last = score
    return bool((last > 0.9).all())
