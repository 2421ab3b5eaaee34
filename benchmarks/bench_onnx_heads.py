"""Mask R-CNN's RoI heads on roigen's MultiScaleRoIAlign: eager PyTorch vs the same
heads exported to ONNX (roigen.onnx) and run in ONNX Runtime, on this CPU.

    python benchmarks/bench_onnx_heads.py [--repeats 7] [--boxes 500]

Prints the median time of each (ms) and their ratio, measured in one run.
ONNX Runtime runs with as many intra-op threads as this machine has cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import heads  # noqa: E402

import roigen.onnx  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: builds kernels, plans sessions
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--boxes", type=int, default=500, help="proposals per image")
    args = parser.parse_args()
    model = heads.Heads()
    features, proposals = heads.inputs(torch.Generator().manual_seed(0), args.boxes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heads.onnx"
        torch.onnx.export(model, (features, proposals), dynamo=True, verbose=False,
                          custom_translation_table=roigen.onnx.translations()).save(str(path))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count()
        session = onnxruntime.InferenceSession(str(path), options)
    feeds = dict(zip((i.name for i in session.get_inputs()),
                     (t.numpy() for t in torch.utils._pytree.tree_leaves((features, proposals)))))
    with torch.no_grad():
        eager = median_ms(lambda: model(features, proposals), args.repeats)
    ort = median_ms(lambda: session.run(None, feeds), args.repeats)
    print(f"Mask R-CNN RoI heads, 2 images x {args.boxes} proposals, {os.cpu_count()} cores, "
          f"median of {args.repeats}:")
    print(f"  roigen in eager PyTorch   {eager:8.1f} ms")
    print(f"  exported, ONNX Runtime    {ort:8.1f} ms   ({ort / eager:.2f}x roigen's time)")


if __name__ == "__main__":
    main()
