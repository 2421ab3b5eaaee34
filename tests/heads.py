"""torchvision's Mask R-CNN RoI heads on roigen's MultiScaleRoIAlign, with inputs:
exported to ONNX by test_deploy.py and timed by benchmarks/bench_onnx_heads.py."""

from __future__ import annotations

import torch
import torchvision

import roigen.ops as R

IMAGE_SHAPES = [(256, 320), (240, 320)]


class Heads(torch.nn.Module):
    """Box and mask heads without their post-processing: (class logits, box deltas, mask logits)."""

    def __init__(self):
        super().__init__()
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        self.heads = model.roi_heads.eval()
        self.heads.box_roi_pool = R.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        self.heads.mask_roi_pool = R.MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor]):
        h = self.heads
        box = h.box_predictor(h.box_head(h.box_roi_pool(features, proposals, IMAGE_SHAPES)))
        mask = h.mask_predictor(h.mask_head(h.mask_roi_pool(features, proposals, IMAGE_SHAPES)))
        return (*box, mask)


def inputs(gen: torch.Generator, boxes: int = 40):
    """FPN maps P2-P5 of a 256 x 320 batch of two, and `boxes` proposals per image."""
    features = {str(i): torch.randn(2, 256, 64 >> i, 80 >> i, generator=gen) for i in range(4)}
    proposals = []
    for _ in IMAGE_SHAPES:
        corner = torch.rand(boxes, 2, generator=gen) * 200
        size = torch.rand(boxes, 2, generator=gen) * 100 + 8
        proposals.append(torch.cat([corner, corner + size], 1))
    return features, proposals
