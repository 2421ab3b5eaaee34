"""The `roigen` command line."""

from __future__ import annotations

import argparse
import sys
import time


def _check_against_reference(workload: dict) -> float:
    """Max |roigen - float64 reference| over forward and input gradient, on a small
    problem with the workload's parameters."""
    import torch

    from . import workloads
    from .bench import run_op

    channels = 2 * 49 if workload["op"].startswith("ps_") else 24
    small = {**workload, "input": [2, channels, 13, 17], "boxes": 12}
    x, boxes = workloads.make_inputs(small, torch.float64)
    x.requires_grad_()
    ours = run_op("roigen", small, x, boxes)
    ref = run_op("reference", small, x, boxes)
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
        seconds = time.perf_counter() - start
        print(f"  {name:15s} {table[name]['op']:13s} kernels ready and checked in {seconds:5.2f} s; "
              f"vs float64 reference (forward, gradient): max error {error:.1e} {'ok' if ok else 'MISMATCH'}",
              flush=True)
    if failed:
        print("roigen demo: kernels disagree with the reference", file=sys.stderr)
        return 1
    print(f"\ntiming on this machine (median of {args.repeats}, torchvision in the same run):", flush=True)
    rows = [bench.measure(name, args.repeats) for name in names]
    print(bench.render(rows, args.repeats))
    from . import refine

    if not refine.demo():
        print("roigen demo: box refinement did not reach the object", file=sys.stderr)
        return 1
    return 0


def targets(args) -> int:
    from .target import available, host_name, resolve

    for name in available():
        if name == "host":
            print(f"host  ->  {host_name()}")
            continue
        t = resolve(name)
        print(f"{name:18s} family={t.family:4s} runtime={t.runtime:5s} tvm={t.tvm}")
    return 0


def ops(args) -> int:
    from .specs import SPECS

    for name, cls in SPECS.items():
        params = ", ".join(f"{f.name}: {f.metadata['schema']}" for f in cls.op_fields())
        print(f"{name}({params})")
    return 0


def _split_ops(text: str) -> list[str]:
    from .specs import SPECS

    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r}; ops: {', '.join(SPECS)}")
    return names


def generate(args) -> int:
    import os
    from pathlib import Path

    from .package import generate as write_package
    from .package import parse_spec
    from .target import resolve

    target = resolve(args.target)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out: cannot create {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out: cannot write to {out}")
    specs = [parse_spec(text) for text in args.spec]
    ops_ = _split_ops(args.ops) if args.ops else sorted({s.name for s in specs}) or None
    if ops_ is None:
        from .specs import SPECS

        ops_ = list(SPECS)
    manifest = write_package(target, ops_, out, specs or None, torch_library=args.torch_library,
                             progress=lambda m: print(f"roigen generate: {m}", file=sys.stderr, flush=True))
    print(manifest.parent)
    return 0


def tune_cmd(args) -> int:
    from pathlib import Path

    from . import workloads
    from .tune import table, tune

    _split_ops(args.op)
    label, _ = workloads.resolve(args.workload, op=args.op)  # refused here, before any work
    print(f"roigen tune: {args.op} on {label}, target {args.target}, up to {args.trials} trials",
          file=sys.stderr, flush=True)
    result = tune(args.op, args.workload, args.target, args.trials, args.repeats,
                  Path(args.db) if args.db else None, args.rpc, args.device_key)
    print(table(result))
    return 0


def bench_cmd(args) -> int:
    from . import bench, workloads
    from .backends import backend_for
    from .target import resolve

    # "cuda": the current GPU's target (as the ops' "auto" picks for CUDA tensors).
    named = {"auto": "cpu", "cuda": "cuda"}
    device = named.get(args.target) or backend_for(resolve(args.target)).device_type
    if args.plot and device != "cpu":
        raise ValueError("--plot charts the CPU peers: use it with --target auto")
    names = args.workloads or ("" if args.workload else ",".join(bench.CPU_WORKLOADS))
    chosen = [(name, None) for name in names.split(",") if name]
    for text in args.workload:  # refused here, before any measurement
        _, workload = workloads.resolve(text)
        chosen.append((workloads.describe(workload), workload))
    rows = []
    for name, workload in chosen:
        print(f"roigen bench: measuring {name}", file=sys.stderr, flush=True)
        rows.append(bench.measure(name, args.repeats, device, peers=device == "cpu", workload=workload,
                                  target="auto" if device == "cuda" else args.target))
    print(bench.render(rows, args.repeats, device=device, target=args.target))
    if device == "cpu":
        print("\nagainst the CPU peers (forward):\n")
        print(bench.render_peers(rows, args.repeats))
    if args.plot:
        bench.plot(rows, args.plot)
        print(f"chart: {args.plot}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (exit 2), as every other bad argument."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _workload_list(text: str) -> str:
    """--workloads: comma-separated names of workloads.json."""
    from . import workloads

    known = workloads.load()["workloads"]
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown workload {(unknown or [text])[0]!r}; workloads: "
                                         f"{', '.join(known)}")
    return ",".join(names)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, got {text!r}")
    return value


def main(argv=None) -> int:
    from .bench import CPU_WORKLOADS

    parser = _Parser(prog="roigen", description="RoI kernels generated with Apache TVM")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("demo", help="build kernels for this host, check them against the reference, time them")
    p.add_argument("--workloads", type=_workload_list, default=",".join(CPU_WORKLOADS),
                   help="comma-separated workloads.json names")
    p.add_argument("--repeats", type=_positive, default=5)
    p.set_defaults(func=demo)
    sub.add_parser("targets", help="list target descriptions").set_defaults(func=targets)
    sub.add_parser("ops", help="list ops and their parameters").set_defaults(func=ops)
    p = sub.add_parser("generate", help="write a self-contained kernel package for a target",
                       description="Write a kernel package: library, sources, manifest and a Python loader.")
    p.add_argument("--target", required=True, help="a target name (roigen targets), or host")
    p.add_argument("--ops", default="", help="comma-separated ops (default: every op, or those of --spec)")
    p.add_argument("--spec", action="append", default=[], metavar="OP:KEY=VALUE,...",
                   help="a parameter set to include, e.g. roi_align:output_size=7,spatial_scale=0.125,"
                        "sampling_ratio=2,aligned=true (repeatable; default: the workloads' sets)")
    p.add_argument("--out", required=True, help="the package folder; its name is the package's import name")
    p.add_argument("--torch-library", action="store_true",
                   help="also build the C++ op library that registers the ops in processes without "
                        "roigen's Python ops (AOTInductor; CPU targets)")
    p.set_defaults(func=generate)
    p = sub.add_parser("tune", help="search a target's schedule space for an op; record the best per device",
                       description="Tune an op's forward and backward kernels on one workload; the best "
                                   "schedule is recorded for this device and used by every later build.")
    p.add_argument("--op", required=True)
    p.add_argument("--workload", required=True,
                   help="a workloads.json name (its shapes and parameters), or one's own workload in JSON, "
                        "inline or a .json file: the op's parameters, input [N, C, H, W], boxes, and "
                        "optionally seed and box_fraction (the largest box side drawn, as a fraction of "
                        "the image's; default 0.5)")
    p.add_argument("--target", default="host", help="cpu/host, vulkan, cuda-sm80, cuda-sm90, ...")
    p.add_argument("--trials", type=_positive, default=64, help="points of the space to measure (at most)")
    p.add_argument("--repeats", type=_positive, default=5, help="timed runs per kernel and trial")
    p.add_argument("--db", help="records folder (default: ROIGEN_TUNING_DIR or ~/.local/share/roigen/tuning)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="measure on devices of this TVM RPC tracker")
    p.add_argument("--device-key", help="with --rpc: the tracker key of the devices (names the records)")
    p.set_defaults(func=tune_cmd)
    p = sub.add_parser("bench", help="time roigen against torchvision (and, on the CPU, ONNX Runtime and "
                       "OpenVINO where installed) on the workloads")
    p.add_argument("--workloads", type=_workload_list,
                   help=f"comma-separated workloads.json names (default: {','.join(CPU_WORKLOADS)}, "
                        "unless --workload is given)")
    p.add_argument("--workload", action="append", default=[], metavar="JSON",
                   help="also a workload of one's own, in JSON, inline or a .json file (as roigen tune "
                        "takes it; repeatable)")
    p.add_argument("--repeats", type=_positive, default=5)
    p.add_argument("--target", default="auto", help="auto (this CPU), vulkan, or cuda (the current GPU)")
    p.add_argument("--plot", metavar="FILE.png", help="also chart the speed-ups over each CPU peer (matplotlib)")
    p.set_defaults(func=bench_cmd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, MemoryError) as err:
        print(f"roigen: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
