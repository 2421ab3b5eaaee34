"""Hash every kernel's TIR, for checking that a refactor left the kernels unchanged.

For each case of the test matrix, dtype, target and knob point (the default
and each knob varied alone) it hashes `PrimFunc.script()` of every kernel,
and writes {case|dtype|target|point|kernel: hash} as JSON.  Run it before and
after a change and compare the files: equal CPU hashes mean the same program
goes to LLVM, so the same machine code and the same speed.

    python benchmarks/tir_hashes.py before.json --targets cpu-x86-avx512 --dtypes float32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from roigen.lower import kernel_funcs  # noqa: E402
from roigen.schedules import default_point, knob_groups, schedule_for  # noqa: E402
from roigen.target import resolve  # noqa: E402

from cases import ALL  # noqa: E402


def points(spec, target) -> list[dict]:
    base = default_point(spec, target)
    varied = [{**base, knob: value} for group in knob_groups(spec, target).values()
              for knob, values in group.items() for value in values[1:]]
    return [base, *varied]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--targets", default="cpu-x86-avx512,cpu-x86-avx2,cpu-aarch64-neon,vulkan,cuda-sm80")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    args = parser.parse_args()
    ops = set(filter(None, args.ops.split(",")))
    hashes = {}
    for case in ALL:
        if ops and case.name not in ops:
            continue
        for dtype in args.dtypes.split(","):
            spec = case.spec(dtype)
            for target in map(resolve, args.targets.split(",")):
                for point in points(spec, target):
                    funcs = kernel_funcs(spec, target, schedule_for(spec, target, point))
                    for name, func in sorted(funcs.items()):
                        key = f"{case}|{dtype}|{target.name}|{sorted(point.items())}|{name}"
                        hashes[key] = hashlib.sha256(func.script().encode()).hexdigest()[:16]
    Path(args.output).write_text(json.dumps(hashes, indent=0, sort_keys=True))
    print(f"{len(hashes)} kernels")


if __name__ == "__main__":
    main()
