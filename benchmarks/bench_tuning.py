"""Tuned vs default schedules on this machine: forward and backward kernels per workload.

    python benchmarks/bench_tuning.py [--workloads fpn_box,c4_head,mask_head] [--target cpu] [--repeats 7]

"tuned" is the schedule this device's tuning record gives (roigen tune; the
records shipped in tuning/ or ROIGEN_TUNING_DIR); "default" is the family's
default point.  Both are measured here, in one run, alternating for
--rounds rounds (medians of the rounds' medians): on this VM two measurements
of the same kernels one after the other differ by up to 30 %.  The process
keeps freed memory for reuse (bench.retain_freed_memory), so that page faults
on fresh outputs, the same for every schedule, do not dilute the comparison.

The memory floor of a kernel is the time to read its input once and write its
output once (forward: the map and the output; backward: the output gradient
and the map's gradient), see bench.memory_floor_ms.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch

from roigen import records, workloads
from roigen.bench import memory_floor_ms, retain_freed_memory
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
    retain_freed_memory()
    target = resolve("host" if args.target == "cpu" else args.target)
    device = "cuda" if target.runtime == "cuda" else "cpu"
    table = workloads.load()["workloads"]
    lines = ["| workload | kernel | default (ms) | tuned (ms) | speed-up | floor (ms) | default / floor | tuned / floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    knob_lines = []
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
        out = torch.randn(spec.kernel_output_shape(x.shape, wl["boxes"]))
        floors = {"forward": memory_floor_ms([x], [out], args.repeats, device),
                  "backward": memory_floor_ms([out], [x.clone()], args.repeats, device)}
        for kernel, d, t in (("forward", d_fwd, t_fwd), ("backward", d_bwd, t_bwd)):
            ratios.append(d / t)
            floor = floors[kernel]
            lines.append(f"| {name} | {kernel} | {d:.1f} | {t:.1f} | {d / t:.2f}x | {floor:.1f} | "
                         f"{d / floor:.2f} | {t / floor:.2f} |")
        knob_lines.append(f"- {name}: default {default}; tuned {tuned}")
        print(f"measured {name}", file=sys.stderr, flush=True)
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    lines.append(f"\nGeometric mean speed-up, tuned over default: {geomean:.2f}x (target {target.name}).\n")
    print("\n".join(lines + knob_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
