"""`roigen demo`'s box refinement: gradient ascent on an IoU computed through prroi_pool."""

from __future__ import annotations

import torch

from roigen import refine


def test_iou_through_prroi_pool_is_the_geometric_iou_for_boxes_inside_the_plateau():
    # Inside the object's surface plateau (between its first and last pixel centres) the
    # surface is 1, so the intersection is the box's area; the object's area is its pixel count.
    x1, y1, x2, y2 = refine.OBJECT
    box = torch.tensor([[0, x1 + 1.3, y1 + 2.1, x2 - 3.7, y2 - 1.9]], dtype=torch.float64)
    area = (x2 - x1 - 5.0) * (y2 - y1 - 4.0)
    pixels = (x2 - x1 + 1) * (y2 - y1 + 1)
    got = refine.iou(box, refine.object_map())
    torch.testing.assert_close(got, torch.tensor([area / pixels], dtype=torch.float64))


def test_refinement_moves_boxes_onto_the_object():
    start = torch.tensor([[0, 6.0, 4.0, 30.0, 26.0], [0, 28.0, 25.0, 60.0, 58.0]])
    history = list(refine.refine(start, steps=60))
    first, last = history[0][2], history[-1][2]
    assert (first < 0.2).all() and (last > 0.9).all()
    x1, y1, x2, y2 = refine.OBJECT
    target = torch.tensor([x1 - 0.5, y1 - 0.5, x2 + 0.5, y2 + 0.5], dtype=torch.float64)
    assert (history[-1][1] - target).abs().max() < 1.0
