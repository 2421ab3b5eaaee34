"""Tuned vs default schedules on this machine: forward and backward kernels per workload.

    python benchmarks/bench_tuning.py [--workloads fpn_box,c4_head,mask_head] [--target cpu] [--repeats 7]

"tuned" is the schedule this device's tuning record gives (roigen tune; the
records shipped in tuning/ or ROIGEN_TUNING_DIR); "default" is the family's
default point.  Both are measured here, in one run, alternating for
--rounds rounds (medians of the rounds' medians): on this VM two measurements
of the same kernels one after the other differ by up to 30 %.  The memory
floor is the time to copy the input and the output once.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch

from roigen import records, workloads
from roigen.bench import median_ms
from roigen.schedules import space_for
from roigen.target import resolve
from roigen.tune import measure_local, workload_spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="fpn_box,c4_head,mask_head")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    target = resolve("host" if args.target == "cpu" else args.target)
    table = workloads.load()["workloads"]
    lines = ["| workload | kernel | default knobs | tuned knobs | default (ms) | tuned (ms) | speed-up | floor (ms) | default / floor |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    ratios = []
    for name in args.workloads.split(","):
        spec, wl = workload_spec(table[name]["op"], name, target)
        default = {k: v[0] for k, v in space_for(spec, target).items()}
        tuned, _ = records.lookup(spec, target)
        tuned = tuned or default
        runs = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            runs["default"].append(measure_local(spec, target, default, wl, args.repeats))
            runs["tuned"].append(measure_local(spec, target, tuned, wl, args.repeats))
        (d_fwd, d_bwd), (t_fwd, t_bwd) = ([statistics.median(v) for v in zip(*runs[k])] for k in ("default", "tuned"))
        x, _ = workloads.make_inputs(wl)
        out = torch.empty(spec.kernel_output_shape(x.shape, wl["boxes"]))
        x_copy, out_copy = torch.empty_like(x), torch.empty_like(out)
        floor = median_ms(lambda: x_copy.copy_(x), args.repeats) + median_ms(lambda: out_copy.copy_(out), args.repeats)
        for kernel, d, t in (("forward", d_fwd, t_fwd), ("backward", d_bwd, t_bwd)):
            ratios.append(d / t)
            lines.append(f"| {name} | {kernel} | {default} | {tuned} | {d:.1f} | {t:.1f} | {d / t:.2f}x | "
                         f"{floor:.1f} | {d / floor:.2f} |")
        print(f"measured {name}", file=sys.stderr, flush=True)
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    lines.append(f"\nGeometric mean speed-up, tuned over default: {geomean:.2f}x (target {target.name}).")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
