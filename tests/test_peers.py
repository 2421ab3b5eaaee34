"""`roigen.peers`: ONNX Runtime and OpenVINO as benchmark baselines, checked against
torchvision before they are timed (timing itself is never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from roigen import bench, peers, workloads


def _small(name: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A workload of workloads.json with 16 channels and 40 boxes: its op and parameters."""
    workload = dict(workloads.load()["workloads"][name])
    workload["input"] = [workload["input"][0], 16, *workload["input"][2:]]
    workload["boxes"] = 40
    return (workload, *workloads.make_inputs(workload))


@pytest.mark.parametrize("peer", list(peers.RUNNERS))
@pytest.mark.parametrize("name", ["fpn_box", "c4_head", "fast_rcnn_pool", "spp_window"])
def test_each_peer_runs_each_workload_as_torchvision(peer, name):
    pytest.importorskip({"ONNX Runtime": "onnxruntime", "OpenVINO": "openvino"}[peer])
    workload, x, boxes = _small(name)
    want = bench.run_op("oracle", workload, x, boxes)
    run = peers.runner(peer, workload, x, boxes, want)  # raises Skipped if it differs
    torch.testing.assert_close(peers.as_output(workload, run()), want, rtol=1e-4, atol=1e-4)


def test_a_peer_that_differs_from_torchvision_is_not_timed(monkeypatch):
    workload, x, boxes = _small("fpn_box")
    want = bench.run_op("oracle", workload, x, boxes)
    monkeypatch.setitem(peers.RUNNERS, "ONNX Runtime", lambda *args: lambda: [want.numpy() + 0.5])
    with pytest.raises(peers.Skipped, match="differs from torchvision"):
        peers.runner("ONNX Runtime", workload, x, boxes, want)


def test_a_missing_peer_is_a_note_in_the_row(monkeypatch):
    def missing(*args):
        raise peers.Skipped("not installed (openvino)")

    monkeypatch.setattr(peers, "RUNNERS", {"OpenVINO": missing})
    workload, x, boxes = _small("fast_rcnn_pool")
    row = {"torchvision_forward": 2.0, "roigen_forward": 1.0}
    bench.measure_peers(workload, x, boxes, 1, row)
    assert row["OpenVINO_note"] == "not installed (openvino)"
    assert row["best_peer"] == "torchvision" and row["speedup_best_peer"] == 2.0


def test_plot_writes_a_chart(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"workload": "fpn_box", "roigen_forward": 1.0, "torchvision_forward": 9.0, "OpenVINO_forward": 3.0}]
    bench.plot(rows, str(tmp_path / "chart.png"))
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_times_a_workload_of_ones_own(capsys):
    """`roigen bench --workload JSON`: one's own shapes, timed against torchvision (and the
    peers where installed) and named in the tables by op, shape and box count."""
    from roigen.cli import main

    own = {"op": "roi_align", "input": [1, 16, 20, 28], "boxes": 24, "output_size": 7, "spatial_scale": 0.125,
           "sampling_ratio": 2, "aligned": True, "box_fraction": 0.3}
    assert main(["bench", "--workload", json.dumps(own), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| roi_align 1x16x20x28, 24 boxes | roi_align |")]
    assert len(rows) == 2  # the torchvision table and the peers' table
    speedup = rows[0].split("|")[5].strip()
    assert speedup.endswith("x") and float(speedup[:-1]) > 0
