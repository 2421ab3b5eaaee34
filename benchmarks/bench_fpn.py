"""FPN's multi-scale RoIAlign alone, on Mask R-CNN's pyramid: roigen against torchvision.

    python benchmarks/bench_fpn.py [--repeats 9] [--boxes 1024]

Two images' P2-P5 maps as maskrcnn_resnet50_fpn makes them from 800 x 1088 inputs
(256 channels, 200 x 272 down to 25 x 34), boxes of sides 4-600 px spread over the
images (most land on P2, as a training iteration's sampled proposals do), 7 x 7
output, sampling ratio 2.  Checks roigen's output against torchvision's
MultiScaleRoIAlign, then times forward (no_grad) and forward+backward (the maps
requiring grad), median of --repeats, both libraries in this process.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torchvision

from roigen import bench
from roigen.ops import multi_scale_roi_align
from roigen.ops.multi_scale import assign_levels

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
IMAGE = (800, 1088)


def inputs(count: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, 256, 200 >> i, 272 >> i, generator=gen) for i in range(4)]
    corner = torch.rand(count, 2, generator=gen) * torch.tensor([1000.0, 760.0])
    side = torch.exp(torch.rand(count, 2, generator=gen) * 5) * 4
    far = (corner + side).clamp(max=torch.tensor([float(IMAGE[1]), float(IMAGE[0])]))
    boxes = torch.cat([torch.arange(count).remainder(2)[:, None].float(), corner, far], 1)
    return features, boxes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--boxes", type=int, default=1024)
    args = parser.parse_args(argv)
    features, boxes = inputs(args.boxes)
    named = {str(i): f for i, f in enumerate(features)}
    per_image = [boxes[boxes[:, 0] == i, 1:] for i in range(2)]
    theirs = torchvision.ops.MultiScaleRoIAlign(list(named), 7, 2)

    def ours_forward(maps):
        return multi_scale_roi_align(maps, boxes, 7, SCALES, 2, False)

    def theirs_forward(maps):
        return theirs(dict(zip(named, maps)), per_image, [IMAGE, IMAGE])

    # torchvision's rows go image by image; roigen's keep the boxes' order.
    order = torch.cat([torch.nonzero(boxes[:, 0] == i).flatten() for i in range(2)])
    with torch.no_grad():
        error = (ours_forward(features)[order] - theirs_forward(features)).abs().max().item()
    grad = torch.randn(len(boxes), 256, 7, 7, generator=torch.Generator().manual_seed(1))

    def backward(forward, rows):
        maps = [f.detach().requires_grad_() for f in features]
        forward(maps).backward(rows)

    with torch.no_grad():
        fwd = {"roigen": bench.median_ms(lambda: ours_forward(features), args.repeats),
               "torchvision": bench.median_ms(lambda: theirs_forward(features), max(3, args.repeats // 3))}
    both = {"roigen": bench.median_ms(lambda: backward(ours_forward, grad), args.repeats),
            "torchvision": bench.median_ms(lambda: backward(theirs_forward, grad[order]), max(3, args.repeats // 3))}
    counts = torch.bincount(assign_levels(boxes, SCALES), minlength=4).tolist()
    print(f"{args.boxes} boxes over P2-P5 (per level {counts}); largest difference from torchvision {error:.2g}; "
          f"{bench.machine()}\n")
    print("| | torchvision (ms) | roigen (ms) | speed-up |\n|---|---:|---:|---:|")
    for label, times in (("forward", fwd), ("forward+backward", both)):
        print(f"| {label} | {times['torchvision']:.1f} | {times['roigen']:.1f} | "
              f"{times['torchvision'] / times['roigen']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
