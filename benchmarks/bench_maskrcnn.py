"""roigen inside a real model: torchvision's Mask R-CNN with roigen's MultiScaleRoIAlign.

    python benchmarks/bench_maskrcnn.py [--repeats 3] [--out table.md]

`maskrcnn_resnet50_fpn` (random weights, nothing downloaded), two 480 x 640 images
(resized by the model to 800 x 1066) with three objects each.  The same model twice:
torchvision's box_roi_pool / mask_roi_pool, and roigen's MultiScaleRoIAlign in their
place.  First the check, both ways: detections in eval mode, then in training mode
the losses and every parameter's gradient (the samplers seeded alike).  Then the
times, median of --repeats, the two models taking turns: the pools inside the model
(forward hooks), the RoI heads, and one training iteration (forward + backward).
Everything runs in one process, so the ratios are what counts (absolute times move
20-50 % between runs here).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torchvision

import roigen.ops as R

LEVELS = ["0", "1", "2", "3"]


def models():
    torch.manual_seed(0)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    ours = copy.deepcopy(theirs)
    ours.roi_heads.box_roi_pool = R.MultiScaleRoIAlign(LEVELS, 7, 2)
    ours.roi_heads.mask_roi_pool = R.MultiScaleRoIAlign(LEVELS, 14, 2)
    return theirs, ours


def data(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 480, 640, generator=gen) for _ in range(2)]
    targets = []
    for _ in images:
        corner = torch.rand(3, 2, generator=gen) * torch.tensor([400.0, 260.0])
        boxes = torch.cat([corner, corner + 60 + torch.rand(3, 2, generator=gen) * 150], 1)
        masks = torch.zeros(3, 480, 640, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.round().long().tolist()):
            m[y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, 91, (3,), generator=gen), "masks": masks})
    return images, targets


class Clock:
    """Time spent inside modules (forward, and backward through them), by name."""

    def __init__(self, modules: dict):
        self.spent = dict.fromkeys(modules, 0.0)
        self._began = {}  # the pools run inside the heads: one start per module
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, a, name=name: self._start(name))
            module.register_forward_hook(lambda m, a, o, name=name: self._stop(name))

    def _start(self, name):
        self._began[name] = time.perf_counter()

    def _stop(self, name):
        self.spent[name] += time.perf_counter() - self._began[name]

    def reset(self):
        self.spent = dict.fromkeys(self.spent, 0.0)


def _detection_difference(want: dict, got: dict) -> str:
    """How far apart two detection lists are.  With random weights many scores nearly tie,
    so float-level differences can reorder them: each detection is matched to the other
    list's nearest one of the same label, and the largest distances are reported."""
    if len(want["boxes"]) != len(got["boxes"]):
        return "different counts"
    box = score = mask = 0.0
    for j in range(len(want["boxes"])):
        same = (got["labels"] == want["labels"][j]).nonzero().flatten()
        if not len(same):
            return f"detection {j}'s label is missing"
        distance = (got["boxes"][same] - want["boxes"][j]).abs().amax(1)
        m = int(same[distance.argmin()])
        box = max(box, float(distance.min()))
        score = max(score, abs(float(got["scores"][m] - want["scores"][j])))
        mask = max(mask, float((got["masks"][m] - want["masks"][j]).abs().max()))
    return f"matched by label and box: largest differences box {box:.2g} px, score {score:.2g}, mask {mask:.2g}"


def check(theirs, ours, images, targets) -> list[str]:
    lines = []
    theirs.eval(), ours.eval()
    with torch.no_grad():
        want, got = theirs(images), ours(images)
    for i, (w, g) in enumerate(zip(want, got)):
        lines.append(f"image {i}: {len(w['boxes'])} detections (torchvision pools), {len(g['boxes'])} (roigen); "
                     + _detection_difference(w, g))
    theirs.train(), ours.train()
    losses = []
    for model in (theirs, ours):
        model.zero_grad()
        torch.manual_seed(5)  # the proposal samplers draw alike
        loss = model(images, targets)
        sum(loss.values()).backward()
        losses.append(loss)
    for k in losses[0]:
        lines.append(f"loss {k}: {float(losses[0][k].detach()):.6f} vs {float(losses[1][k].detach()):.6f}")
    worst = max(float((a.grad - b.grad).abs().max() / (a.grad.abs().max() + 1e-12))
                for a, b in zip(theirs.parameters(), ours.parameters()) if a.grad is not None)
    lines.append(f"parameter gradients: largest difference relative to the parameter's largest gradient {worst:.2g}")
    return lines


def timings(models: dict, images, targets, repeats: int) -> dict:
    """Each model's times (name -> {part: ms}), median of `repeats` after a warm-up, the models
    taking turns one iteration each: a slow spell of the VM (iterations here moved from 7 to
    18 s between runs) then slows both alike, and their ratio holds."""
    clocks, times = {}, {}
    for name, model in models.items():
        heads = model.roi_heads
        clocks[name] = Clock({"box pool": heads.box_roi_pool, "mask pool": heads.mask_roi_pool, "RoI heads": heads})
        times[name] = {"box pool": [], "mask pool": [], "RoI heads": [], "training iteration": []}
        model.train()
    for i in range(repeats + 1):  # the first round warms up
        for name, model in models.items():
            clock = clocks[name]
            clock.reset()
            model.zero_grad()
            torch.manual_seed(5)
            start = time.perf_counter()
            sum(model(images, targets).values()).backward()
            total = time.perf_counter() - start
            if i:
                for k, v in clock.spent.items():
                    times[name][k].append(v)
                times[name]["training iteration"].append(total)
    return {name: {k: statistics.median(v) * 1e3 for k, v in parts.items()} for name, parts in times.items()}


def standalone_fpn_box(repeats: int) -> dict:
    """fpn_box's forward alone, roigen and torchvision, in this process (the bar's reference)."""
    from roigen import bench, workloads

    w = workloads.load()["workloads"]["fpn_box"]
    x, boxes = workloads.make_inputs(w)
    args = (w["output_size"], w["spatial_scale"], w["sampling_ratio"], w["aligned"])
    with torch.no_grad():
        theirs = bench.median_ms(lambda: torchvision.ops.roi_align(x, boxes, *args), repeats)
        ours = bench.median_ms(lambda: R.roi_align(x, boxes, *args), repeats)
    return {"torchvision": theirs, "roigen": ours, "speed-up": theirs / ours}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args(argv)
    theirs, ours = models()
    images, targets = data()
    lines = ["Mask R-CNN (maskrcnn_resnet50_fpn, random weights), 2 images 480 x 640, torch "
             f"{torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads", "",
             "Check (torchvision's pools vs roigen's):", ""]
    lines += [f"- {line}" for line in check(theirs, ours, images, targets)]
    print("checked", file=sys.stderr, flush=True)
    both = timings({"torchvision": theirs, "roigen": ours}, images, targets, args.repeats)
    want, got = both["torchvision"], both["roigen"]
    lines += ["", "Training mode, forward (pools, heads) and forward + backward (iteration), ms, median of "
              f"{args.repeats}:", "", "| part | torchvision pools | roigen pools | speed-up | saved |",
              "|---|---|---|---|---|"]
    for k in want:
        lines.append(f"| {k} | {want[k]:.1f} | {got[k]:.1f} | {want[k] / got[k]:.2f}x | {want[k] - got[k]:.1f} |")
    saved = (want["box pool"] - got["box pool"]) + (want["mask pool"] - got["mask pool"])
    iteration = want["training iteration"] - got["training iteration"]
    lines += ["", f"The pools' forward saved {saved:.1f} ms; the iteration {iteration:.1f} ms."]
    alone = standalone_fpn_box(max(args.repeats, 5))
    inside = want["box pool"] / got["box pool"]
    verdict = {True: "met", False: "not met"}
    lines += ["", f"Standalone fpn_box forward in this run: torchvision {alone['torchvision']:.1f} ms, roigen "
              f"{alone['roigen']:.1f} ms, {alone['speed-up']:.2f}x.  Issue 14's bars: the box pool's speed-up "
              f"inside the model ({inside:.2f}x) at least the standalone one: {verdict[inside >= alone['speed-up']]}; "
              f"the iteration faster by at least the pools' saving: {verdict[iteration >= saved]}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
