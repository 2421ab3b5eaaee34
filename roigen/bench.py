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


def run_op(kind: str, workload: dict, x, boxes, **options):
    """`workload`'s op with its parameters: "roigen" (with `options`: target,
    deterministic), its "oracle" (the peer the benchmarks compare with) or its
    float64 "reference"."""
    from .ops import _adapter

    spec = workloads.spec_of(workload)
    params = _adapter.params_of(spec)
    if kind == "roigen":
        return _adapter.run(type(spec), x, boxes, params, **options)
    fn = _adapter.oracle(type(spec), params) if kind == "oracle" else _adapter.reference(type(spec), params)
    if fn is None:
        raise ValueError(f"{workload['op']} has no {kind} for the parameters {params}")
    return fn(x, boxes)


def retain_freed_memory() -> None:
    """Re-run this process under glibc tunables that keep freed memory for reuse
    (MALLOC_MMAP_MAX_=0), so large tensors do not fault in fresh pages on every call:
    on this project's VM a fresh 51 MB output costs 10-15 ms of page faults."""
    import os
    import sys

    if os.environ.get("MALLOC_MMAP_MAX_") != "0":
        env = {**os.environ, "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def median_ms(fn, repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of `fn`; on CUDA, synchronised so the kernels are inside the interval."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_times(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Every wall time, ms, of each of `fns` (name -> callable, CPU), timed in turn, one call
    of each per round: on a noisy machine a slow spell then slows every one of them alike, so
    their ratios hold where times taken one after another do not."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def interleaved_ms(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall time, ms, of each of `fns`, timed in turn (`interleaved_times`)."""
    return {name: statistics.median(t) for name, t in interleaved_times(fns, repeats, warmup).items()}


def memory_floor_ms(reads, writes, repeats: int, device: str = "cpu") -> float:
    """The least time an op can take that reads `reads` once and writes `writes` once:
    a reduction over each input plus a fill of each output (preallocated, already
    touched), each timed alone.  Inputs must hold real data: an untouched
    torch.empty reads the kernel's shared zero page, at cache speed."""
    total = sum(median_ms(lambda t=t: t.sum(), repeats, device=device) for t in reads)
    return total + sum(median_ms(lambda t=t: t.fill_(0), repeats, device=device) for t in writes)


def measure(name: str, repeats: int = 5, device: str = "cpu", peers: bool = False, workload: dict | None = None,
            **options) -> dict:
    """roigen (with `options`: target, deterministic) and torchvision on one workload,
    inputs on `device`; torchvision runs on that device too.  `peers`: also ONNX Runtime's
    and OpenVINO's forward (CPU), each checked against torchvision first (roigen.peers).
    `name` is a workloads.json name, or the label of `workload`, one's own (workloads.own)."""
    workload = workload or workloads.load()["workloads"][name]
    x, boxes = (t.to(device) for t in workloads.make_inputs(workload))
    with torch.no_grad():
        out = run_op("roigen", workload, x, boxes, **options)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(device)
    row = {"workload": name, "op": workload["op"]}
    # The peers' column is labelled torchvision: every workload's oracle is torchvision's op
    # (RoI-SPP's, its roi_pool once per level).
    for label, kind, opts in (("roigen", "roigen", options), ("torchvision", "oracle", {})):
        def forward(kind=kind, opts=opts):
            with torch.no_grad():
                run_op(kind, workload, x, boxes, **opts)

        def forward_backward(kind=kind, opts=opts):
            leaf = x.detach().requires_grad_()
            run_op(kind, workload, leaf, boxes, **opts).backward(grad)

        row[f"{label}_forward"] = median_ms(forward, repeats, device=device)
        row[f"{label}_forward_backward"] = median_ms(forward_backward, repeats, device=device)
    if peers:
        measure_peers(workload, x, boxes, repeats, row)
    row["floor"] = memory_floor_ms([x], [out.clone()], repeats, device)
    for phase in ("forward", "forward_backward"):
        row[f"speedup_{phase}"] = row[f"torchvision_{phase}"] / row[f"roigen_{phase}"]
    row["floor_ratio"] = row["roigen_forward"] / row["floor"]
    return row


def measure_peers(workload: dict, x, boxes, repeats: int, row: dict) -> None:
    """Each CPU peer's forward time into `row` ("<peer>_forward", ms), or why it was not
    timed ("<peer>_note"); "best_peer" is the fastest of torchvision and the peers."""
    from . import peers

    with torch.no_grad():
        want = run_op("oracle", workload, x, boxes)
    for name in peers.RUNNERS:
        try:
            run = peers.runner(name, workload, x, boxes, want)
        except peers.Skipped as why:
            row[f"{name}_note"] = str(why)
            continue
        row[f"{name}_forward"] = median_ms(run, repeats)
    times = {"torchvision": row["torchvision_forward"],
             **{n: row[f"{n}_forward"] for n in peers.RUNNERS if f"{n}_forward" in row}}
    row["best_peer"] = min(times, key=times.get)
    row["speedup_best_peer"] = times[row["best_peer"]] / row["roigen_forward"]


def render_peers(rows: list[dict], repeats: int) -> str:
    """The forward against every CPU peer, and the memory floor."""
    import jinja2

    from . import peers

    text = resources.files("roigen.templates").joinpath("bench_peers.md.j2").read_text()
    return jinja2.Template(text, trim_blocks=True, lstrip_blocks=True).render(
        rows=rows, repeats=repeats, peers=list(peers.RUNNERS), threads=peers.THREADS, machine=machine())


def plot(rows: list[dict], path: str) -> None:
    """A bar chart of roigen's forward speed-up over each peer, per workload (matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'roigen[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import peers

    names = ["torchvision", *peers.RUNNERS]
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 2, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [r[f"{name}_forward"] / r["roigen_forward"] if f"{name}_forward" in r else 0 for r in rows]
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(rows))], [r["workload"] for r in rows])
    ax.set_ylabel("roigen forward speed-up (x, log)")
    ax.set_title("roigen vs each peer, CPU forward, one run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine(device: str = "cpu", target: str = "auto") -> str:
    import os

    import torchvision

    from .target import host_name

    if device == "cuda":
        capability = ".".join(map(str, torch.cuda.get_device_capability()))
        where = f"{torch.cuda.get_device_name()} (compute capability {capability})"
    else:
        where = f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    if target not in ("auto", "host") and device == "cpu":  # a CPU-tensor target other than this CPU
        from .backends import backend_for
        from .target import resolve

        tgt = resolve(target)
        if not tgt.machine:
            where += f"; roigen on {backend_for(tgt).device_name()} ({tgt.name})"
    return (f"{where}, roigen target {host_name() if target == 'auto' and device == 'cpu' else target}; "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")


def render(rows: list[dict], repeats: int, allocator: str = "glibc malloc, default settings",
           device: str = "cpu", target: str = "auto") -> str:
    import jinja2

    text = resources.files("roigen.templates").joinpath("bench_table.md.j2").read_text()
    return jinja2.Template(text, trim_blocks=True, lstrip_blocks=True).render(
        rows=rows, repeats=repeats, machine=machine(device, target), allocator=allocator)


def emit(table: str, out: str | None) -> None:
    """Print a benchmark table, and write it to `out` too if given."""
    print(table)
    if out:
        with open(out, "w") as f:
            f.write(table)
