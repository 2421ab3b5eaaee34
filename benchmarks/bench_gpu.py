"""roigen vs torchvision on a GPU for the workloads of workloads.json.

    python benchmarks/bench_gpu.py [--repeats 10] [--workloads fpn_box,mask_head] [--deterministic] [--out t.md]
    python benchmarks/bench_gpu.py --target vulkan      # roigen on Vulkan, against torchvision on the CPU

CUDA (the default): both libraries on the current CUDA device, times taken
between torch.cuda.synchronize() calls; roigen's backward scatters with
atomics unless --deterministic.  Vulkan: PyTorch has no Vulkan tensors, so
roigen stages through host memory and the baseline is torchvision's CPU
kernel; the times include those copies.
"""

from __future__ import annotations

import argparse
import sys

import torch

from roigen import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--workloads", default=",".join(bench.CPU_WORKLOADS))
    parser.add_argument("--target", default="cuda", choices=("cuda", "vulkan"))
    parser.add_argument("--deterministic", action="store_true", help="roigen's backward without atomics")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.target == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = "cuda" if args.target == "cuda" else "cpu"
    target = "auto" if args.target == "cuda" else "vulkan"
    rows = []
    for name in args.workloads.split(","):
        rows.append(bench.measure(name, args.repeats, device, target=target, deterministic=args.deterministic))
        print(f"measured {name}", file=sys.stderr, flush=True)
    note = "CUDA caching allocator" if device == "cuda" else "glibc malloc, default settings"
    if args.deterministic:
        note += "; roigen backward deterministic (no atomics)"
    if device == "cuda":
        from roigen.target import cuda_name

        target = cuda_name(torch.cuda.get_device_capability())
    table = bench.render(rows, args.repeats, note, device, target)
    bench.emit(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
