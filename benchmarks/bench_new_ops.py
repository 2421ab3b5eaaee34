"""The ops beyond the peers on the CPU: roi_align_rotated, prroi_pool, deform_roi_pool and the box gradients,
on fpn_box's map and boxes, next to roigen's own roi_align (and torchvision's, the peer
for angle 0) measured in the same run.

    python benchmarks/bench_new_ops.py [--repeats 5] [--workload fpn_box] [--out table.md]

Rotated boxes are fpn_box's boxes about their centres at random angles in [-90, 90]
degrees; deformable boxes are fpn_box's boxes with random offsets in [-1, 1] (gamma 0.1:
shifts of up to a tenth of the box).  "box grad" columns: forward + backward with both
the map and the boxes (for deform_roi_pool: the boxes and the offsets, two leaves, as a
model passes them) requiring grad, against the map alone.  The issue's bars, as ratios in this run:
roi_align_rotated forward <= 1.5x roi_align's, prroi_pool forward <= 3x roi_align's,
the box gradient adding <= 1.5x to the forward + backward.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from roigen import bench, workloads


def rotated(boxes: torch.Tensor, seed: int = 3) -> torch.Tensor:
    """(K, 6) rows (batch, cx, cy, w, h, angle): the boxes about their centres, angles in [-90, 90]."""
    b, x1, y1, x2, y2 = boxes.unbind(1)
    angle = torch.rand(len(boxes), generator=torch.Generator().manual_seed(seed)) * 180 - 90
    return torch.stack([b, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle], 1)


def deformable(boxes: torch.Tensor, size: int, seed: int = 5) -> torch.Tensor:
    """(K, 5 + 2*size*size) rows: each box, then its bins' offsets in [-1, 1] (x, then y)."""
    offsets = torch.rand(len(boxes), 2 * size * size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.cat([boxes, offsets], 1)


def configurations(fn, boxes, x, grad, box_grad: bool = True) -> dict:
    """Forward, forward + backward (map), forward + backward (map and boxes): callables.
    `boxes`: the op's box arguments after the map, a tensor or a tuple of them (deformable
    pooling's boxes and offsets, each its own leaf, as a model's are)."""
    boxes = boxes if isinstance(boxes, tuple) else (boxes,)

    def forward():
        with torch.no_grad():
            fn(x, *boxes)

    def forward_backward(box_grad=False):
        leaf = x.detach().requires_grad_()
        fn(leaf, *(t.detach().requires_grad_(box_grad) for t in boxes)).backward(grad)

    runs = {"forward": forward, "forward_backward": forward_backward}
    if box_grad:
        runs["with_box_grad"] = lambda: forward_backward(True)
    return runs


def measure(name: str, repeats: int) -> list[dict]:
    import torchvision

    import roigen.ops as R

    workload = workloads.load()["workloads"][name]
    x, boxes = workloads.make_inputs(workload)
    size, scale, ratio = workload["output_size"], workload["spatial_scale"], workload["sampling_ratio"]
    grad = torch.randn(len(boxes), x.shape[1], size, size, generator=torch.Generator().manual_seed(7))
    turned = rotated(boxes)
    upright = turned.clone()
    upright[:, 5] = 0
    ops = {
        "roigen roi_align": (lambda t, b: R.roi_align(t, b, size, scale, ratio, True), boxes),
        "torchvision roi_align": (lambda t, b: torchvision.ops.roi_align(t, b, size, scale, ratio, True), boxes),
        "roigen roi_align_rotated, angle 0": (lambda t, b: R.roi_align_rotated(t, b, size, scale, ratio), upright),
        "roigen roi_align_rotated, angles in [-90, 90]": (
            lambda t, b: R.roi_align_rotated(t, b, size, scale, ratio), turned),
        "roigen prroi_pool": (lambda t, b: R.prroi_pool(t, b, size, scale), boxes),
        "roigen deform_roi_pool, offsets in [-1, 1]": (
            lambda t, b, offset: R.deform_roi_pool(t, b, offset, size, scale, ratio),
            (boxes, deformable(boxes, size)[:, 5:].reshape(-1, 2, size, size))),
    }
    # Every op and configuration timed in turn, one call each per round, so that each ratio
    # the bars name comes from the same spells of this noisy VM: a ratio is the median of the
    # rounds' own ratios, each of two calls made moments apart.  torchvision's calls (a second
    # and more, on torch's threads) slowed the roigen calls of their rounds, the next one most
    # (20-30 %: the rotated forward 11.3 ms after them, 8.6 alone): they get rounds of their
    # own, next to roigen's roi_align alone.
    def timed(labels):
        return bench.interleaved_times({(label, kind): run for label in labels for kind, run in configurations(
            *ops[label], x, grad, not label.startswith("torchvision")).items()}, repeats)

    peer = "torchvision roi_align"
    times = timed([label for label in ops if label != peer])
    peer_times = timed(["roigen roi_align", peer])
    return [row(label, peer_times if label == peer else times) for label in ops]


def row(label: str, times: dict) -> dict:
    """`label`'s medians and ratios from rounds that timed it next to roigen's roi_align."""
    kinds = ("forward", "forward_backward", "with_box_grad")
    return {"op": label, **{kind: statistics.median(times[label, kind]) if (label, kind) in times else None
                            for kind in kinds},
            "vs_roi_align": paired_ratio(times[label, "forward"], times["roigen roi_align", "forward"]),
            "box_grad_adds": (paired_ratio(times[label, "with_box_grad"], times[label, "forward_backward"])
                              if (label, "with_box_grad") in times else None)}


def paired_ratio(numerator: list, denominator: list) -> float:
    """The median over rounds of one round's time over the other's, in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def render(rows: list[dict], name: str, repeats: int) -> str:
    lines = [f"{name}, CPU, ms (median of {repeats}, every op and configuration timed in turn; ratios: the median "
             f"of each round's own); {bench.machine()}", "",
             "| op | forward | vs roigen roi_align | fwd+bwd | fwd+bwd with box grad | box grad adds |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        boxed = "n/a" if r["with_box_grad"] is None else f"{r['with_box_grad']:.1f}"
        adds = "n/a" if r["box_grad_adds"] is None else f"{r['box_grad_adds']:.2f}x"
        lines.append(f"| {r['op']} | {r['forward']:.1f} | {r['vs_roi_align']:.2f}x | "
                     f"{r['forward_backward']:.1f} | {boxed} | {adds} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workload", default="fpn_box")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    bench.emit(render(measure(args.workload, args.repeats), args.workload, args.repeats), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
