"""roigen calls interleaved with torch work: does what torch ran just before slow roigen down?

    python benchmarks/bench_threads.py [--repeats 31]

In a model, convolutions and roigen calls alternate.  torch's OpenMP workers spin for a
while after each torch op; when roigen's kernels ran on TVM's own thread pool, the two
pools fought over the cores (roigen now runs them on torch's threads: roigen/native).
This times each op alone (back to back) and right after a short torch op that runs on
every thread, in one process; a ratio near 1 means the torch op left nothing behind.
Run it with and without OMP_WAIT_POLICY=PASSIVE (torch's workers sleep at once) to see
the spin's share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import roigen.ops as R


def _time(fn, repeats: int, before=None) -> tuple[float, float]:
    """(median, 90th percentile) of fn's time in ms, each run right after `before` if given."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    # A short torch op on every thread, on data that stays in cache: what follows it
    # meets torch's workers still spinning, not a cold cache.
    v = torch.randn(1 << 18, generator=gen)
    torch_op = lambda: torch.mul(v, 1.5)  # noqa: E731
    small = torch.randn(1, 64, 32, 32, generator=gen)
    large = torch.randn(2, 256, 200, 272, generator=gen)
    xy = torch.rand(1000, 2, generator=gen) * torch.tensor([1000.0, 700.0])
    wh = torch.rand(1000, 2, generator=gen) * 300 + 16
    boxes = torch.cat([torch.randint(0, 2, (1000, 1), generator=gen).float(), xy, xy + wh], 1)
    few = torch.cat([torch.zeros(8, 1), boxes[:8, 1:] / 40], 1)  # inside the small map's one image
    cases = {
        "roi_spp, small map, 8 boxes": lambda: R.roi_spp(small, few, (4, 2, 1), 1.0),
        "roi_align, fpn_box-like (1000 boxes, 256 channels)": lambda: R.roi_align(large, boxes, 7, 0.25, 2, True),
    }
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, torch threads {torch.get_num_threads()}")
    print("| op | alone: median, p90 (ms) | right after a torch op: median, p90 (ms) | ratio of medians |")
    print("|---|---|---|---|")
    for name, fn in cases.items():
        fn()  # build and warm
        alone = _time(fn, args.repeats)
        after = _time(fn, args.repeats, before=torch_op)
        print(f"| {name} | {alone[0]:.2f}, {alone[1]:.2f} | {after[0]:.2f}, {after[1]:.2f} | "
              f"{after[0] / alone[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
