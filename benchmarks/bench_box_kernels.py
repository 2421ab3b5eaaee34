"""The box gradients' kernels on the CPU, without autograd: each op's forward, its backward for
the map alone (`<op>_backward`) and its fused backward for the map and the boxes
(`<op>_backward_with_boxes`), called as the registered torch ops on fpn_box's map and boxes.

    python benchmarks/bench_box_kernels.py [--repeats 31] [--ops roi_align,prroi_pool]

benchmarks/bench_new_ops.py measures what the issue's bar names (forward + backward through
autograd); this isolates the kernels the box gradient adds, for A/B work on them.  Every op
and kernel is timed in turn, one call each per round, and each is reported by its 25th
percentile and median (this VM's slow spells lift the upper quantiles alike); "fused over
plain" is the ratio of the two backwards' 25th percentiles.  Boxes as bench_new_ops.py's.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from bench_new_ops import deformable, rotated

from roigen import bench, workloads

OPS = ("roi_align", "roi_align_rotated", "prroi_pool", "deform_roi_pool")


def calls(name: str, x: torch.Tensor, boxes: torch.Tensor, workload: dict) -> dict:
    """name's forward, plain backward and fused backward as callables on the workload."""
    import roigen.ops  # noqa: F401  (registers torch.ops.roigen)

    ns = torch.ops.roigen
    size, scale, ratio = workload["output_size"], workload["spatial_scale"], workload["sampling_ratio"]
    rows, params = {
        "roi_align": (boxes, (scale, size, size, ratio, True, "avg")),
        "roi_align_rotated": (rotated(boxes), (scale, size, size, ratio, True, "deg", False)),
        "prroi_pool": (boxes, (scale, size, size)),
        "deform_roi_pool": (deformable(boxes, size), (scale, size, size, ratio, 0.1)),
    }[name]
    forward, backward = getattr(ns, name), getattr(ns, f"{name}_backward")
    fused = getattr(ns, f"{name}_backward_with_boxes")
    out, aux = forward(x, rows, *params)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    n, c, h, w = x.shape
    return {
        "forward": lambda: forward(x, rows, *params),
        "backward (map)": lambda: backward(grad, rows, aux, n, c, h, w, False, *params, "auto", False),
        "backward (map and boxes)": lambda: fused(grad, x, rows, out, aux, *params, "auto", False),
    }


def timed(runs: dict, repeats: int) -> dict:
    """(25th percentile, median) in ms of each of `runs`, timed in turn."""
    return {key: (statistics.quantiles(t, n=4)[0], statistics.median(t))
            for key, t in bench.interleaved_times(runs, repeats).items()}


def render(times: dict, ops, name: str, repeats: int) -> str:
    lines = [f"{name}, CPU, kernels without autograd, ms (25th percentile / median of {repeats}, "
             f"timed in turn); {bench.machine()}", "",
             "| op | forward | backward (map) | backward (map and boxes) | fused over plain |",
             "|---|---|---|---|---|"]
    for op in ops:
        cells = [f"{times[op, kind][0]:.2f} / {times[op, kind][1]:.2f}"
                 for kind in ("forward", "backward (map)", "backward (map and boxes)")]
        ratio = times[op, "backward (map and boxes)"][0] / times[op, "backward (map)"][0]
        lines.append(f"| {op} | {' | '.join(cells)} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--workload", default="fpn_box")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"--ops: unknown {', '.join(unknown)}; choose from {', '.join(OPS)}")
    workload = workloads.load()["workloads"][args.workload]
    x, boxes = workloads.make_inputs(workload)
    runs = {(op, kind): fn for op in ops for kind, fn in calls(op, x, boxes, workload).items()}
    bench.emit(render(timed(runs, args.repeats), ops, args.workload, args.repeats), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
