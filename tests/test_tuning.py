"""Autotuning: records per device, applied by later builds, robust to damage; RPC and Vulkan tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from devices import require_vulkan

from roigen import records
from roigen.build import ensure_built
from roigen.specs import RoIAlignSpec
from roigen.target import device_key, resolve
from roigen.tune import points, tune

SPEC = RoIAlignSpec(spatial_scale=0.125, pooled_height=7, pooled_width=7, sampling_ratio=2, aligned=True)


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch):
    folder = tmp_path / "tuning"
    monkeypatch.setenv("ROIGEN_TUNING_DIR", str(folder))
    records._database.cache_clear()
    yield folder
    records._database.cache_clear()


def test_points_start_with_the_default_and_never_repeat():
    space = {"threads": [256, 128, 64], "table": [32, 16, 8]}
    chosen = points(space, 100)
    assert chosen[0] == {"threads": 256, "table": 32}
    assert len(chosen) == 9 and len({tuple(sorted(p.items())) for p in chosen}) == 9
    assert len(points(space, 4)) == 4


def test_tiny_tuning_run_writes_a_record(tuning_dir):
    result = tune("roi_align", "fpn_box", "cpu", trials=2, repeats=1, progress=None)
    folder = tuning_dir / device_key(resolve("host"))
    assert result["database"] == str(folder)
    lines = (folder / records.RECORD_FILE).read_text().splitlines()
    assert len(lines) == 1 and "SampleCategorical" in lines[0]
    assert all(t.forward_ms > 0 and t.backward_ms > 0 for t in result["trials"])
    knobs, source = records.lookup(SPEC, resolve("host"))  # SPEC is fpn_box's spec
    assert knobs == result["best"].knobs and source["database"] == str(folder)


FRESH = textwrap.dedent("""
    import json, sys, torch
    from roigen.build import plan, ensure_built
    from roigen.specs import RoIAlignSpec
    from roigen.target import resolve
    from roigen import cache
    import roigen.ops
    spec = RoIAlignSpec(spatial_scale=0.125, pooled_height=7, pooled_width=7, sampling_ratio=2, aligned=True)
    sched, source = plan(spec, resolve("host"))
    name, _ = ensure_built(spec, "host")
    x = torch.randn(1, 24, 20, 20, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 8.0, 8.0, 120.0, 100.0], [0, -20.0, 30.0, 60.0, 170.0]])
    out = roigen.ops.roi_align(x, boxes, 7, 0.125, 2, True)
    print(json.dumps({"lanes": sched.lanes, "source": source,
                      "meta": json.loads(cache.path(name, ".json").read_text())["tuning"]}))
    torch.save(out, sys.argv[1])
""")


def _fresh(tmp_path, tuning_dir):
    env = {**os.environ, "ROIGEN_TUNING_DIR": str(tuning_dir), "ROIGEN_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "out.pt")], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr, torch.load(tmp_path / "out.pt")


def test_a_fresh_process_builds_with_the_record(tmp_path, tuning_dir):
    from roigen import reference

    target = resolve("host")
    # Record a non-default point, so that applying it is visible.
    records.commit(tuning_dir / device_key(target), SPEC, target, {"lanes": 8}, 0.001)
    seen, _, out = _fresh(tmp_path, tuning_dir)
    assert seen["lanes"] == 8
    assert "sample_categorical(candidates=[16, 8, 32]" in seen["source"]["trace"]
    assert seen["meta"] == seen["source"]  # the record is part of the cache key
    x = torch.randn(1, 24, 20, 20, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 8.0, 8.0, 120.0, 100.0], [0, -20.0, 30.0, 60.0, 170.0]])
    torch.testing.assert_close(out.double(), reference.roi_align(x, boxes, 7, 0.125, 2, True), rtol=1e-5, atol=1e-5)
    default_name, _ = ensure_built(SPEC, "host", {"lanes": 16})
    tuned_name, _ = ensure_built(SPEC, "host", {"lanes": 8})
    assert default_name != tuned_name


@pytest.mark.parametrize("damage", ["corrupted", "mismatched"])
def test_a_bad_database_falls_back_with_a_warning(tmp_path, tuning_dir, damage):
    target = resolve("host")
    folder = tuning_dir / device_key(target)
    records.commit(folder, SPEC, target, {"lanes": 8}, 0.001)
    path = folder / records.RECORD_FILE
    if damage == "corrupted":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    else:  # a record from another knob space: it chose lanes=7, which this space does not offer
        text = path.read_text()
        assert "[[16,8,32]" in text
        path.write_text(text.replace("[[16,8,32]", "[[16,7,32]"))
    seen, stderr, out = _fresh(tmp_path, tuning_dir)
    # Not the damaged record's lanes=8: the default, or a record shipped with roigen.
    assert seen["lanes"] == 16
    assert seen["source"] is None or seen["source"]["database"] != str(folder)
    assert "ignoring" in stderr and out.shape == (2, 24, 7, 7)


def test_tuning_on_an_rpc_device(tmp_path):
    """A tracker and a server on loopback, started here; the runner measures through them."""
    pytest.importorskip("tornado")
    from tvm.rpc import server as rpc_server
    from tvm.rpc import tracker as rpc_tracker

    tracker = rpc_tracker.Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc_server.Server(host="127.0.0.1", port=9400, port_end=9500, key="loopback-cpu",
                               tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        time.sleep(1)
        result = tune("roi_align", "fpn_box", "cpu", trials=1, repeats=1, db=tmp_path / "db",
                      rpc=f"127.0.0.1:{tracker.port}", device="loopback-cpu", progress=None)
    finally:
        server.terminate()
        tracker.terminate()
    trial = result["trials"][0]
    assert not trial.error and trial.forward_ms > 0 and trial.backward_ms > 0
    folder = tmp_path / "db" / f"{resolve('host').name}/loopback-cpu"
    assert (folder / records.RECORD_FILE).read_text().count("SampleCategorical") >= 1


def test_tuning_on_vulkan(tmp_path):
    require_vulkan()
    result = tune("roi_pool", "fast_rcnn_pool", "vulkan", trials=2, repeats=1, db=tmp_path / "db", progress=None)
    assert [t.error for t in result["trials"]] == ["", ""]
    assert result["trials"][0].knobs == {"table": 32, "threads": 256}
    assert (tmp_path / "db" / device_key(resolve("vulkan")) / records.RECORD_FILE).exists()
