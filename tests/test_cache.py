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


def _run(tmp_path, cache, mode, stderr=None):
    env = {**os.environ, "ROIGEN_CACHE_DIR": str(cache)}
    result = tmp_path / f"{mode}.pt"
    run = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(result)], env=env, check=True,
                         capture_output=True, text=True)
    if stderr is not None:
        stderr.append(run.stderr)
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
    stderr = []
    again = _run(tmp_path, cache, "build", stderr)
    torch.testing.assert_close(first, again)
    assert Path(library).stat().st_size > 100
    assert stderr[0].count("discarding unreadable cache entry") == 1  # reported once
    _run(tmp_path, cache, "forbid-compile")  # and the rebuilt entry is whole


def test_concurrent_builds_leave_one_valid_entry(tmp_path):
    """Two processes compiling the same kernel at once: atomic renames leave one whole entry."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    waiting = textwrap.dedent(f"""
        import os, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
    """)
    env = {**os.environ, "ROIGEN_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", waiting + SCRIPT, "build", str(tmp_path / f"{i}.pt")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    go.touch()
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    names = sorted(p.name for p in cache.iterdir())
    assert [n for n in names if n.endswith(".so")] and len([n for n in names if n.endswith(".so")]) == 1
    assert not [n for n in names if n.startswith(".")], names  # no temporary files left behind
    torch.testing.assert_close(torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt"))
    torch.testing.assert_close(_run(tmp_path, cache, "forbid-compile"), torch.load(tmp_path / "0.pt"))
