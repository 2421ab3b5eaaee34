"""roigen vs torchvision on the CPU for the workloads of workloads.json.

    python benchmarks/bench_cpu.py [--repeats 5] [--workloads fpn_box,c4_head] [--out table.md]

Prints a markdown table: forward and forward+backward times, their ratios to
torchvision measured in this run, and the memory floor.
"""

from __future__ import annotations

import argparse
import sys

from roigen import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default=",".join(bench.CPU_WORKLOADS))
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = []
    for name in args.workloads.split(","):
        rows.append(bench.measure(name, args.repeats))
        print(f"measured {name}", file=sys.stderr, flush=True)
    table = bench.render(rows, args.repeats)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
