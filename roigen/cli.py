"""The `roigen` command line."""

from __future__ import annotations

import argparse
import sys
import time


def _check_against_reference(workload: dict) -> float:
    """Max |roigen - float64 reference| over forward and input gradient, on a small
    problem with the workload's parameters."""
    import torch

    import roigen.ops

    from . import reference, workloads
    from .bench import run_op

    channels = 2 * 49 if workload["op"].startswith("ps_") else 24
    small = {**workload, "input": [2, channels, 13, 17], "boxes": 12}
    x, boxes = workloads.make_inputs(small, torch.float64)
    x.requires_grad_()
    ours = run_op(roigen.ops, small, x, boxes)
    ref = run_op(reference, small, x, boxes)
    grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    return max((ours - ref).abs().max().item(), (g_ours - g_ref).abs().max().item())


def demo(args) -> int:
    from . import bench, workloads
    from .cache import cache_dir
    from .target import resolve

    target = resolve("host")
    print(f"host target: {target.name} ({dict(target.tvm)}); kernel cache: {cache_dir()}")
    names = args.workloads.split(",")
    table = workloads.load()["workloads"]
    failed = False
    for name in names:
        start = time.perf_counter()
        error = _check_against_reference(table[name])  # builds (or loads) the float64 kernels
        ok = error < 1e-9
        failed |= not ok
        print(f"  {name:15s} {table[name]['op']:13s} kernels ready and checked in {time.perf_counter() - start:5.2f} s; "
              f"vs float64 reference (forward, gradient): max error {error:.1e} {'ok' if ok else 'MISMATCH'}",
              flush=True)
    if failed:
        print("roigen demo: kernels disagree with the reference", file=sys.stderr)
        return 1
    print(f"\ntiming on this machine (median of {args.repeats}, torchvision in the same run):", flush=True)
    rows = [bench.measure(name, args.repeats) for name in names]
    print(bench.render(rows, args.repeats))
    return 0


def targets(args) -> int:
    from .target import available, host_name

    for name in available():
        print(f"{name}  ->  {host_name()}" if name == "host" else name)
    return 0


def ops(args) -> int:
    from .specs import SPECS

    for name, cls in SPECS.items():
        params = ", ".join(f"{f.name}: {f.metadata['schema']}" for f in cls.op_fields())
        print(f"{name}({params})")
    return 0


def main(argv=None) -> int:
    from .bench import CPU_WORKLOADS

    parser = argparse.ArgumentParser(prog="roigen", description="RoI kernels generated with Apache TVM")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build kernels for this host, check them against the reference, time them")
    p.add_argument("--workloads", default=",".join(CPU_WORKLOADS), help="comma-separated workloads.json names")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=demo)
    sub.add_parser("targets", help="list target descriptions").set_defaults(func=targets)
    sub.add_parser("ops", help="list ops and their parameters").set_defaults(func=ops)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"roigen: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
