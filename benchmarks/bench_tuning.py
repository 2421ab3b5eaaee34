"""Tuned vs default schedules on this machine: forward and backward kernels per workload.

    python benchmarks/bench_tuning.py [--workloads fpn_box,c4_head,mask_head] [--target cpu] [--repeats 7]
                                      [--baseline '{"forward_fuse": false, "backward_fuse": false}']

"tuned" is the schedule this device's tuning record gives (roigen tune; the
records shipped in tuning/ or ROIGEN_TUNING_DIR); "default" is the family's
default point, or that point with --baseline's knobs (where the space has
them), to compare with another point.  Both are measured here, in one run, alternating for
--rounds rounds (medians of the rounds' medians): on this VM two measurements
of the same kernels one after the other differ by up to 30 %.  Times are
roigen.tune.measure_local's, the tuner's own: the ops' calls, with the output
tensors reused across calls (a fresh 400 MB output faults in as many pages as
the kernel takes time, the same for every schedule).

The memory floor of a kernel is the time to read its input once and write its
output once (forward: the map and the output; backward: the output gradient
and the map's gradient), see bench.memory_floor_ms.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch

from roigen import records, workloads
from roigen.backends import backend_for
from roigen.bench import memory_floor_ms
from roigen.schedules import default_point
from roigen.target import resolve
from roigen.tune import measure_local, workload_spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="fpn_box,c4_head,mask_head")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=json.loads, default={},
                        help="JSON knobs replacing the default's, e.g. a point to compare with")
    args = parser.parse_args(argv)
    target = resolve("host" if args.target == "cpu" else args.target)
    device = backend_for(target).device_type
    table = workloads.load()["workloads"]
    base = "baseline" if args.baseline else "default"
    lines = [f"| workload | kernel | {base} (ms) | tuned (ms) | speed-up | floor (ms) | {base} / floor "
             "| tuned / floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    knob_lines = []
    ratios = []
    names = args.workloads.split(",")
    # Floors first: after a kernel runs, TVM's idle workers spin for a while and
    # slow torch's own threads on a 2-core machine.
    floors = {}
    for name in names:
        spec, wl = workload_spec(table[name]["op"], name, target)
        x, _ = workloads.make_inputs(wl)
        out = torch.randn(spec.kernel_output_shape(x.shape, wl["boxes"]))
        floors[name] = {"forward": memory_floor_ms([x], [out], args.repeats, device),
                        "backward": memory_floor_ms([out], [x.clone()], args.repeats, device)}
    for name in names:
        spec, wl = workload_spec(table[name]["op"], name, target)
        default = {k: args.baseline.get(k, v) for k, v in default_point(spec, target).items()}
        tuned, _ = records.lookup(spec, target)
        tuned = tuned or default
        runs = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            runs["default"].append(measure_local(spec, target, default, wl, args.repeats))
            runs["tuned"].append(measure_local(spec, target, tuned, wl, args.repeats))
        (d_fwd, d_bwd), (t_fwd, t_bwd) = ([statistics.median(v) for v in zip(*runs[k])] for k in ("default", "tuned"))
        for kernel, d, t in (("forward", d_fwd, t_fwd), ("backward", d_bwd, t_bwd)):
            ratios.append(d / t)
            floor = floors[name][kernel]
            lines.append(f"| {name} | {kernel} | {d:.1f} | {t:.1f} | {d / t:.2f}x | {floor:.1f} | "
                         f"{d / floor:.2f} | {t / floor:.2f} |")
        changed = {k: v for k, v in tuned.items() if default.get(k) != v}
        knob_lines.append(f"- {name}: the record changes {changed or 'nothing'} from the {base} {default}")
        print(f"measured {name}", file=sys.stderr, flush=True)
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    lines.append(f"\nGeometric mean speed-up, tuned over {base}: {geomean:.2f}x (target {target.name}).\n")
    print("\n".join(lines + knob_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
