"""Autotuning: records per device, applied by later builds, robust to damage; RPC and Vulkan tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
import torch

from roigen import records, workloads
from roigen.build import ensure_built
from roigen.schedules import default_point, knob_groups, space_for
from roigen.specs import RoIAlignSpec
from roigen.target import device_key, resolve
from roigen.tune import Trial, best_point, points, tune, workload_spec

from cases import cases
from devices import require_vulkan

SPEC = RoIAlignSpec(spatial_scale=0.125, pooled_height=7, pooled_width=7, sampling_ratio=2, aligned=True)


def _point(**changes) -> dict:
    """A point of SPEC's space on this host: the default with `changes`."""
    return {**default_point(SPEC, resolve("host")), **changes}


# This host's lane candidates (one register, half, two: 16, 8, 32 on AVX-512).
DEFAULT, HALF, DOUBLE = space_for(SPEC, resolve("host"))["forward_lanes"]
# How a record's trace spells them, and a value no space offers.
CANDIDATES = f"[[{DEFAULT},{HALF},{DOUBLE}]"
FOREIGN = f"[[{DEFAULT},{HALF - 1},{DOUBLE}]"


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch):
    folder = tmp_path / "tuning"
    monkeypatch.setenv("ROIGEN_TUNING_DIR", str(folder))
    records._database.cache_clear()
    yield folder
    records._database.cache_clear()


def test_points_start_with_the_default_and_never_repeat():
    space = {"kernels": {"threads": [256, 128, 64], "table": [32, 16, 8]}}
    chosen = points(space, 100)
    assert chosen[0] == {"threads": 256, "table": 32}
    assert len(chosen) == 9 and len({tuple(sorted(p.items())) for p in chosen}) == 9
    assert len(points(space, 4)) == 4


def test_directional_spaces_time_every_half_early_and_combine_the_best():
    space = {"forward": {"forward_lanes": [16, 8, 32], "forward_fuse": [True, False]},
             "backward": {"backward_lanes": [16, 8, 32]}}
    chosen = points(space, 100)
    assert len(chosen) == 18 and chosen[0] == {"forward_lanes": 16, "forward_fuse": True, "backward_lanes": 16}
    first = chosen[:6]  # max(|forward| = 6, |backward| = 3)
    assert len({(p["forward_lanes"], p["forward_fuse"]) for p in first}) == 6
    assert {p["backward_lanes"] for p in first} == {16, 8, 32}
    trials = [Trial({"forward_lanes": 8, "forward_fuse": True, "backward_lanes": 16}, 1.0, 9.0),
              Trial({"forward_lanes": 16, "forward_fuse": False, "backward_lanes": 32}, 5.0, 2.0),
              Trial({"forward_lanes": 32, "forward_fuse": True, "backward_lanes": 8}, 0.5, 0.5, error="boom")]
    assert best_point(space, trials) == {"forward_lanes": 8, "forward_fuse": True, "backward_lanes": 32}
    assert best_point({"kernels": {"threads": [256, 128]}}, [Trial({"threads": 256}, 1.0, 9.0),
                                                Trial({"threads": 128}, 5.0, 2.0)]) == {"threads": 128}


def test_tiny_tuning_run_writes_a_record(tuning_dir):
    result = tune("roi_align", "fpn_box", "cpu", trials=2, repeats=1, progress=None)
    folder = tuning_dir / device_key(resolve("host"))
    assert result["database"] == str(folder)
    lines = (folder / records.RECORD_FILE).read_text().splitlines()
    assert len(lines) == 1 and "SampleCategorical" in lines[0]
    assert all(t.forward_ms > 0 and t.backward_ms > 0 for t in result["trials"])
    knobs, source = records.lookup(SPEC, resolve("host"))  # SPEC is fpn_box's spec
    assert knobs == result["best"].knobs and source["database"] == str(folder)


def test_tuning_on_a_workload_of_ones_own(tuning_dir):
    """A workload given in JSON (a model's own shapes and box sizes) tunes and records its
    op's spec, as a workloads.json name does."""
    own = {"input": [1, 32, 24, 30], "boxes": 12, "output_size": 7, "spatial_scale": 0.125,
           "sampling_ratio": 2, "aligned": True, "box_fraction": 0.2}  # SPEC's parameters
    result = tune("roi_align", json.dumps(own), "cpu", trials=2, repeats=1, progress=None)
    assert json.loads(result["workload"]) == {"op": "roi_align", "seed": 0, **own}
    assert all(t.forward_ms > 0 and t.backward_ms > 0 for t in result["trials"])
    knobs, source = records.lookup(SPEC, resolve("host"))
    assert knobs == result["best"].knobs and source["database"] == str(tuning_dir / device_key(resolve("host")))


def test_own_workloads_draw_boxes_by_the_workloads_rule_at_their_size(tmp_path):
    fpn_box = workloads.load()["workloads"]["fpn_box"]
    assert workloads.resolve("fpn_box") == ("fpn_box", fpn_box)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**fpn_box, "box_fraction": 0.1}))
    label, small = workloads.resolve(str(path))
    assert label == f"the workload in {path}" and small["box_fraction"] == 0.1
    _, default = workloads.resolve(json.dumps(fpn_box))
    torch.testing.assert_close(workloads.make_inputs(default), workloads.make_inputs(fpn_box), rtol=0, atol=0)
    (_, wide), (_, narrow) = workloads.make_inputs(fpn_box), workloads.make_inputs(small)
    *_, h, w = fpn_box["input"]
    image = torch.tensor([w, h]) / fpn_box["spatial_scale"]
    # Same draws, sides scaled: x1 = U * 0.8 * Wi, side = U * fraction * Wi + 8 (clamped to the image).
    torch.testing.assert_close(narrow[:, :3], wide[:, :3])
    sides = narrow[:, 3:] - narrow[:, 1:3]
    assert bool((sides <= 0.1 * image + 8 + 1e-3).all()) and bool((sides > 0).all())
    assert bool(((wide[:, 3:] - wide[:, 1:3]) > 0.1 * image + 8).any())
    with pytest.raises(ValueError, match="workload op"):
        workloads.resolve(json.dumps({**fpn_box, "op": "roi_align_rotated"}))
    # A dict, its op left to the caller, as the tuner takes it.
    spec, whole = workload_spec("roi_align", {k: v for k, v in fpn_box.items() if k != "op"}, resolve("host"))
    assert whole == {**fpn_box, "box_fraction": 0.5} and spec.spatial_scale == fpn_box["spatial_scale"]
    with pytest.raises(ValueError, match="runs roi_align, not 'roi_pool'"):
        workload_spec("roi_pool", fpn_box, resolve("host"))


def test_workload_inputs_follow_the_rule_and_leave_the_callers_random_stream_alone():
    """make_inputs draws as workloads.json's `about` says (torch.manual_seed(seed), then x1, y1,
    w, h and the batch indices), on a generator of its own."""
    fpn_box = workloads.load()["workloads"]["fpn_box"]
    n, _, h, w = fpn_box["input"]
    k, scale = fpn_box["boxes"], fpn_box["spatial_scale"]
    torch.manual_seed(fpn_box["seed"])
    wi, hi = w / scale, h / scale
    x1, y1 = torch.rand(k) * 0.8 * wi, torch.rand(k) * 0.8 * hi
    bw, bh = torch.rand(k) * 0.5 * wi + 8, torch.rand(k) * 0.5 * hi + 8
    batch = torch.randint(0, n, (k,)).float()
    want = torch.stack([batch, x1, y1, torch.clamp(x1 + bw, max=wi - 1), torch.clamp(y1 + bh, max=hi - 1)], 1)
    torch.manual_seed(99)
    _, boxes = workloads.make_inputs(fpn_box)
    after = torch.rand(4)
    torch.manual_seed(99)
    assert torch.equal(after, torch.rand(4))
    torch.testing.assert_close(boxes, want, rtol=0, atol=0)


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
    knobs = sched.compute_kwargs("forward")
    print(json.dumps({"knobs": [knobs["lanes"], knobs["fuse"]], "source": source,
                      "meta": json.loads(cache.path(name, ".json").read_text())["key"]["tuning"]}))
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
    records.commit(tuning_dir / device_key(target), SPEC, target, _point(forward_lanes=HALF, forward_fuse=False),
                   0.001)
    seen, _, out = _fresh(tmp_path, tuning_dir)
    assert seen["knobs"] == [HALF, False]
    assert f"sample_categorical(candidates=[{DEFAULT}, {HALF}, {DOUBLE}]" in seen["source"]["trace"]
    # The record is part of the cache key; where it was found is not.
    assert seen["meta"] == {k: v for k, v in seen["source"].items() if k != "database"}
    x = torch.randn(1, 24, 20, 20, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 8.0, 8.0, 120.0, 100.0], [0, -20.0, 30.0, 60.0, 170.0]])
    torch.testing.assert_close(out.double(), reference.roi_align(x, boxes, 7, 0.125, 2, True), rtol=1e-5, atol=1e-5)
    default_name, _ = ensure_built(SPEC, "host", _point())
    tuned_name, _ = ensure_built(SPEC, "host", _point(forward_lanes=HALF, forward_fuse=False))
    assert default_name != tuned_name


@pytest.mark.parametrize("damage", ["corrupted", "mismatched"])
def test_a_bad_database_falls_back_with_a_warning(tmp_path, tuning_dir, damage):
    target = resolve("host")
    folder = tuning_dir / device_key(target)
    records.commit(folder, SPEC, target, _point(forward_lanes=HALF), 0.001)
    path = folder / records.RECORD_FILE
    if damage == "corrupted":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    else:  # a record from another knob space: lanes this space does not offer
        text = path.read_text()
        assert CANDIDATES in text
        path.write_text(text.replace(CANDIDATES, FOREIGN))
    seen, stderr, out = _fresh(tmp_path, tuning_dir)
    # Not the damaged record: the default, or a record shipped with roigen.
    assert seen["source"] is None or seen["source"]["database"] != str(folder)
    if seen["source"] is None:
        assert seen["knobs"] == [DEFAULT, True]
    assert "ignoring" in stderr and out.shape == (2, 24, 7, 7)


@pytest.mark.slow
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


@pytest.mark.slow
def test_tuning_on_vulkan(tmp_path):
    require_vulkan()
    result = tune("roi_pool", "fast_rcnn_pool", "vulkan", trials=2, repeats=1, db=tmp_path / "db", progress=None)
    assert [t.error for t in result["trials"]] == ["", ""]
    assert result["trials"][0].knobs == {"table": 32, "threads": 256}
    assert (tmp_path / "db" / device_key(resolve("vulkan")) / records.RECORD_FILE).exists()


def _space_points(spec) -> list[dict]:
    """The default and points that between them use every candidate of every knob,
    forward and backward differing (they are built apart)."""
    groups = knob_groups(spec, resolve("host"))
    space = space_for(spec, resolve("host"))
    width = max(len(v) for v in space.values())
    shift = {name: int(direction == "backward") for direction, group in groups.items() for name in group}
    return [{name: values[(i + shift[name] * (i > 0)) % len(values)] for name, values in space.items()}
            for i in range(width)]


# One case per compute family and mode, each layout once per family (roi_warp is the
# align family's kernels with another box rule: roi_align's cases cover its knobs;
# each align point is a build of several seconds).
SPACE_CASES = [(c, layout) for c in cases() for name, layout in (
    ("roi_align-sampling_ratio=-1-aligned=True-mode=avg", "NCHW"),
    ("roi_align-sampling_ratio=2-aligned=True-mode=max", "NHWC"),
    ("roi_pool", "NCHW"), ("roi_pool", "NHWC"), ("roi_spp-levels=(4, 2, 1)", "NHWC"),
    ("spp-levels=(3, 1)-mode=max", "NCHW"), ("spp-levels=(3, 1)-mode=max", "NHWC")) if str(c) == name]


@pytest.mark.parametrize("case, layout", SPACE_CASES, ids=lambda v: str(v))
def test_every_schedule_point_computes_the_op(case, layout, gen):
    """Each knob's every candidate (lanes, fused layout, transposed writes) gives the
    reference's forward (with and without argmax) and backward, channels not a multiple
    of the lanes."""
    from roigen.build import build
    from roigen.runtime import channels_last

    spec = replace(case.spec(dtype="float64"), layout=layout)
    x = torch.randn(2, 20, 11, 13, generator=gen, dtype=torch.float64)
    if layout == "NHWC":
        x = x.contiguous(memory_format=torch.channels_last)
        assert channels_last(x)
    rois = case.boxes(2, 11, 13, 9, 0.5, gen, dtype=torch.float64) if case.takes_boxes else None
    xr = x.detach().clone().requires_grad_()
    ref = case.reference(xr, rois)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(grad)
    points = _space_points(spec)
    assert len(points) >= 3 and points[0] == default_point(spec, resolve("host"))
    for knobs in points:
        kernels = build(spec, "host", knobs)
        out, aux = kernels.forward(x, rois)
        gx = kernels.backward(grad, rois, aux, tuple(x.shape))
        torch.testing.assert_close(out.view(ref.shape), ref.detach(), rtol=1e-9, atol=1e-9, msg=str(knobs))
        # Without an aux tensor (no gradient wanted) max kernels track no winners.
        bare, _ = kernels.forward(x, rois, keep_aux=False)
        torch.testing.assert_close(bare.view(ref.shape), ref.detach(), rtol=1e-9, atol=1e-9, msg=str(knobs))
        torch.testing.assert_close(gx, xr.grad, rtol=1e-9, atol=1e-9, msg=str(knobs))


def test_a_stale_record_does_not_shadow_a_valid_one(tuning_dir):
    """Records accumulate; one from another knob space (an older roigen), even the
    fastest, is skipped with a warning for the next valid one."""
    target = resolve("host")
    folder = tuning_dir / device_key(target)
    records.commit(folder, SPEC, target, _point(forward_lanes=HALF), 0.001)
    path = folder / records.RECORD_FILE
    path.write_text(path.read_text().replace(CANDIDATES, FOREIGN))
    records.commit(folder, SPEC, target, _point(forward_lanes=DOUBLE), 0.002)
    with pytest.warns(UserWarning, match="ignoring a tuning record"):
        knobs, source = records.lookup(SPEC, target)
    assert knobs == _point(forward_lanes=DOUBLE) and source["database"] == str(folder)


def test_confirmed_halves_are_kept_apart():
    from roigen.tune import _keep

    space = {"forward": {"forward_lanes": [16, 8]}, "backward": {"backward_lanes": [16, 8]}}
    default = Trial({"forward_lanes": 16, "backward_lanes": 16}, 10.0, 5.0)
    best = Trial({"forward_lanes": 8, "backward_lanes": 8}, 6.0, 5.5)
    kept = _keep(space, default, best)
    assert kept.knobs == {"forward_lanes": 8, "backward_lanes": 16}
    assert (kept.forward_ms, kept.backward_ms) == (6.0, 5.0)
