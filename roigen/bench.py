"""Timing roigen against torchvision on the workloads: ratios from one run, medians of repeats.

Used by `benchmarks/bench_cpu.py` (the full measurement) and `roigen demo`
(a short one).  torchvision is the baseline and must be installed.
"""

from __future__ import annotations

import platform
import statistics
import time
from importlib import resources

import torch

from . import workloads

CPU_WORKLOADS = ("fpn_box", "c4_head", "mask_head", "fast_rcnn_pool", "spp_window", "ps_fpn_box")


def _roi_spp_composed(lib, x, boxes, levels, scale):
    """torchvision has no RoI-SPP: its baseline is RoIPool once per level."""
    return torch.cat([lib.roi_pool(x, boxes, n, scale).flatten(1) for n in levels], 1)


def run_op(lib, workload: dict, x, boxes):
    """`workload`'s op from `lib` (roigen.ops or torchvision.ops), with its parameters."""
    import roigen.ops

    op, scale = workload["op"], workload["spatial_scale"]
    if op == "roi_align":
        return lib.roi_align(x, boxes, workload["output_size"], scale, workload["sampling_ratio"], workload["aligned"])
    if op == "roi_pool":
        return lib.roi_pool(x, boxes, workload["output_size"], scale)
    if op == "ps_roi_align":
        return lib.ps_roi_align(x, boxes, workload["output_size"], scale, workload["sampling_ratio"])
    if op == "roi_spp":
        if lib is roigen.ops:
            return lib.roi_spp(x, boxes, workload["levels"], scale)
        return _roi_spp_composed(lib, x, boxes, workload["levels"], scale)
    raise ValueError(f"no benchmark for op {op!r}")


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(name: str, repeats: int = 5) -> dict:
    import torchvision.ops

    import roigen.ops

    workload = workloads.load()["workloads"][name]
    x, boxes = workloads.make_inputs(workload)
    with torch.no_grad():
        out = run_op(roigen.ops, workload, x, boxes)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    row = {"workload": name, "op": workload["op"]}
    for label, lib in (("roigen", roigen.ops), ("torchvision", torchvision.ops)):
        def forward():
            with torch.no_grad():
                run_op(lib, workload, x, boxes)

        def forward_backward():
            leaf = x.detach().requires_grad_()
            run_op(lib, workload, leaf, boxes).backward(grad)

        row[f"{label}_forward"] = median_ms(forward, repeats)
        row[f"{label}_forward_backward"] = median_ms(forward_backward, repeats)
    in_copy, out_copy = torch.empty_like(x), torch.empty_like(out)
    row["floor"] = median_ms(lambda: in_copy.copy_(x), repeats) + median_ms(lambda: out_copy.copy_(out), repeats)
    for phase in ("forward", "forward_backward"):
        row[f"speedup_{phase}"] = row[f"torchvision_{phase}"] / row[f"roigen_{phase}"]
    row["floor_ratio"] = row["roigen_forward"] / row["floor"]
    return row


def machine() -> str:
    import os

    import torchvision

    from .target import host_name

    return (f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
            f"target {host_name()}; torch {torch.__version__}, torchvision {torchvision.__version__}")


def render(rows: list[dict], repeats: int, allocator: str = "glibc malloc, default settings") -> str:
    import jinja2

    text = resources.files("roigen.templates").joinpath("bench_table.md.j2").read_text()
    return jinja2.Template(text, trim_blocks=True, lstrip_blocks=True).render(
        rows=rows, repeats=repeats, machine=machine(), allocator=allocator)
