"""The on-disk kernel cache: a second process loads kernels without compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent("""
    import sys, time, torch, tvm
    if sys.argv[1] == "forbid-compile":
        def refuse(*args, **kwargs):
            raise AssertionError("compiled although the kernel was cached")
        tvm.compile = refuse
    import roigen.ops as R
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 7)
    rois = torch.tensor([[0, 0.5, 1.0, 5.0, 4.5]])
    start = time.perf_counter()
    out = R.roi_align(x, rois, 3, 1.0, 2, True)
    print(time.perf_counter() - start)
    torch.save(out, sys.argv[2])
""")


def _run(tmp_path, cache, mode):
    env = {**os.environ, "ROIGEN_CACHE_DIR": str(cache)}
    result = tmp_path / f"{mode}.pt"
    subprocess.run([sys.executable, "-c", SCRIPT, mode, str(result)], env=env, check=True, capture_output=True)
    return torch.load(result)


def test_second_process_loads_without_compiling(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, cache, "build")
    entries = sorted(p.name for p in cache.iterdir())
    assert any(n.endswith(".so") for n in entries) and any(n.endswith(".json") for n in entries)
    second = _run(tmp_path, cache, "forbid-compile")
    torch.testing.assert_close(first, second)


def test_entries_are_readable_and_keyed_by_what_they_depend_on(tmp_path):
    cache = tmp_path / "cache"
    _run(tmp_path, cache, "build")
    (meta_path,) = cache.glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["spec"]["op"] == "roi_align" and meta["spec"]["sampling_ratio"] == 2
    assert {"target", "schedule", "tvm", "source"} <= set(meta)
    assert meta_path.with_suffix(".so").exists()


def test_corrupted_entry_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, cache, "build")
    (library,) = cache.glob("*.so")
    library.write_bytes(library.read_bytes()[:100])  # truncated
    again = _run(tmp_path, cache, "build")
    torch.testing.assert_close(first, again)
    assert Path(library).stat().st_size > 100
