"""roigen vs torchvision on the CPU for the workloads of workloads.json.

    python benchmarks/bench_cpu.py [--repeats 5] [--workloads fpn_box,c4_head] [--out table.md]

Prints markdown tables: forward and forward+backward times, their ratios to
torchvision measured in this run, and the memory floor; then the forward against
every CPU peer (ONNX Runtime, OpenVINO: `pip install 'roigen[bench]'`, each skipped
with a note where not installed).

--retain-freed-memory runs the measurement under glibc's malloc tunables
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>, so that large tensors
reuse freed memory instead of faulting in fresh pages (the effect jemalloc
or tcmalloc have, as PyTorch's CPU tuning guides recommend).  On this
machine a fresh 51 MB output costs ~10-15 ms in page faults, more than the
fpn_box kernel itself; both libraries run under the same setting.
"""

from __future__ import annotations

import argparse
import os
import sys

from roigen import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default=",".join(bench.CPU_WORKLOADS))
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="rerun under glibc tunables that keep freed memory for reuse")
    args = parser.parse_args(argv)
    if args.retain_freed_memory:
        bench.retain_freed_memory()
    rows = []
    for name in args.workloads.split(","):
        rows.append(bench.measure(name, args.repeats, peers=True))
        print(f"measured {name}", file=sys.stderr, flush=True)
    allocator = ("glibc malloc with MALLOC_MMAP_MAX_=0 (freed memory reused)"
                 if os.environ.get("MALLOC_MMAP_MAX_") == "0" else "glibc malloc, default settings")
    table = bench.render(rows, args.repeats, allocator) + "\n" + bench.render_peers(rows, args.repeats)
    bench.emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
