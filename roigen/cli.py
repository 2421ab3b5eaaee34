"""The `roigen` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time


def _specs_for_workloads(names):
    from . import workloads
    from .specs import RoIAlignSpec, RoIPoolSpec, output_size_pair

    table = workloads.load()["workloads"]
    for name in names:
        wl = table[name]
        ph, pw = output_size_pair(wl["output_size"])
        if wl["op"] == "roi_align":
            yield name, wl, RoIAlignSpec(spatial_scale=wl["spatial_scale"], pooled_height=ph, pooled_width=pw,
                                         sampling_ratio=wl["sampling_ratio"], aligned=wl["aligned"])
        else:
            yield name, wl, RoIPoolSpec(spatial_scale=wl["spatial_scale"], pooled_height=ph, pooled_width=pw)


def _check_against_reference(spec, wl) -> float:
    """Max |roigen - float64 reference| on a small random problem with the workload's parameters."""
    import torch

    import roigen.ops

    from . import reference

    gen = torch.Generator().manual_seed(0)
    n, c, h, w = 2, 24, 13, 17
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = wl["spatial_scale"]
    xy = torch.rand(12, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) / scale
    wh = torch.rand(12, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) / scale
    batch = torch.randint(0, n, (12, 1), generator=gen).double()
    rois = torch.cat([batch, xy - 0.2 * wh, xy + wh], 1)
    params = {"output_size": spec.pooled_size, "spatial_scale": scale}
    if wl["op"] == "roi_align":
        params.update(sampling_ratio=spec.sampling_ratio, aligned=spec.aligned)
    ours = getattr(roigen.ops, wl["op"])(x, rois, **params)
    ref = getattr(reference, wl["op"])(x, rois, **params)
    grad = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    return max((ours - ref).abs().max().item(), (g_ours - g_ref).abs().max().item())


def demo(args) -> int:
    from . import bench
    from .build import build
    from .cache import cache_dir
    from .target import resolve

    target = resolve("host")
    print(f"host target: {target.name} ({dict(target.tvm)}); kernel cache: {cache_dir()}")
    names = args.workloads.split(",")
    failed = False
    for name, wl, spec in _specs_for_workloads(names):
        for dtype in ("float32", "float64"):
            start = time.perf_counter()
            build(dataclasses.replace(spec, dtype=dtype), target)
            print(f"  {name:15s} {spec.name:9s} {dtype}: kernels ready in {time.perf_counter() - start:6.2f} s",
                  flush=True)
        error = _check_against_reference(spec, wl)
        ok = error < 1e-9
        failed |= not ok
        print(f"  {name:15s} vs float64 reference (forward and gradient): max error {error:.1e} "
              f"{'ok' if ok else 'MISMATCH'}", flush=True)
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
