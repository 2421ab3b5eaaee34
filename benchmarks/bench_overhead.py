"""What a roigen call costs besides its kernels: the Python and torch work around them.

    python benchmarks/bench_overhead.py [--repeats 41] [--workloads fpn_box,mask_head,fast_rcnn_pool]

Two measurements, in one process:

- A one-box call on a small map (median of many calls): nearly all of it is overhead
  (argument checks, target and kernel lookup, torch's dispatcher and two kernel
  launches).  Warm, back to back; and spaced, each after a 3 ms pause, as calls come in a
  model, where torch's OpenMP workers have gone to sleep meanwhile (at once under
  OMP_WAIT_POLICY=PASSIVE, which the output names).  torchvision's op alongside, for scale.
- On the workloads, the op against its own kernels alone (`Kernels.forward`, the runtime
  call that allocates the output and launches them), timed in turn, forward without
  gradients.  Between two large kernels the caches hold the kernels' data, not Python's
  or torch's code, so the same Python costs several times what it costs warm: this is
  the overhead a model sees, where each call follows other large ops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

import roigen.ops as R
from roigen import bench, workloads
from roigen.build import build


def call_us(fn, repeats: int, pause: float = 0.0) -> float:
    """Median time of `fn` after a warm-up, each call `pause` seconds after the last."""
    for _ in range(100):
        fn()
    times = []
    for _ in range(repeats):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def op_and_kernels_ms(name: str, repeats: int) -> dict:
    """The workload's op and its kernels alone (forward, no gradient), timed in turn."""
    workload = workloads.load()["workloads"][name]
    x, boxes = workloads.make_inputs(workload)
    kernels = build(workloads.spec_of(workload))
    return bench.interleaved_ms({"op": lambda: bench.run_op("roigen", workload, x, boxes),
                                 "kernels": lambda: kernels.forward(x, boxes, keep_aux=False)}, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--workloads", default="fpn_box,mask_head,fast_rcnn_pool")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0]])
    calls = {
        "roigen roi_align": lambda: R.roi_align(x, box, 7, 1.0, 2, True),
        "torchvision roi_align": lambda: torchvision.ops.roi_align(x, box, 7, 1.0, 2, True),
        "roigen roi_pool": lambda: R.roi_pool(x, box, 7, 1.0),
        "torchvision roi_pool": lambda: torchvision.ops.roi_pool(x, box, 7, 1.0),
    }
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"One box on a 1 x 16 x 8 x 8 map, 7 x 7 output, us (OMP_WAIT_POLICY {policy}): warm, median of "
          "3,000 calls; spaced, median of 300 calls 3 ms apart:\n")
    print("| call | warm | spaced |\n|---|---:|---:|")
    for name, fn in calls.items():
        print(f"| {name} | {call_us(fn, 3000):.1f} | {call_us(fn, 300, 0.003):.1f} |")
    print(f"\nOn the workloads, forward, ms, median of {args.repeats}, each timed in turn:\n")
    print("| workload | op | its kernels alone | op minus kernels |\n|---|---:|---:|---:|")
    for name in args.workloads.split(","):
        times = op_and_kernels_ms(name, args.repeats)
        print(f"| {name} | {times['op']:.2f} | {times['kernels']:.2f} | {times['op'] - times['kernels']:.2f} |")
    print(f"\n{bench.machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
