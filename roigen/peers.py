"""The CPU peers users deploy with, as benchmark baselines: ONNX Runtime and OpenVINO.

Each workload's op is built as a one-node model (RoiAlign / ROIAlign for the RoIAlign
workloads, MaxRoiPool / ROIPooling for RoIPool; RoI-SPP as one RoIPool per level in one
model, which neither peer has as one op), run on the CPU with `THREADS` threads in f32,
and checked against torchvision's op on the workload's inputs before it is timed.  A peer
that is not installed, or that has no op for a workload, is skipped with a note.

Where they differ from torchvision (and so are never timed there): ONNX Runtime's RoiAlign
max mode maxes weighted corners rather than samples (only avg mode is timed);
OpenVINO's CPU plugin runs bf16 on CPUs with AMX or AVX512-BF16 unless told f32
(INFERENCE_PRECISION_HINT), which takes RoIPool off by up to 6.  OpenVINO's ROIAlign
matches torchvision's aligned=True with aligned_mode="half_pixel_for_nn" (checked: 6e-8);
its "half_pixel" differs by 0.25 on a small example.
"""

from __future__ import annotations

import os

import numpy as np
import torch

# The peers' intra-op threads: the cores this process may use, as roigen's.
THREADS = len(os.sched_getaffinity(0))
# How close a peer must come to torchvision on the workload to be timed.
TOLERANCE = 1e-3


class Skipped(Exception):
    """A peer that cannot run a workload here; the message says why."""


def _arrays(workload: dict, x: torch.Tensor, boxes: torch.Tensor) -> dict:
    return {"X": x.numpy(), "rois": boxes[:, 1:].contiguous().numpy(), "batch": boxes[:, 0].long().numpy(),
            "rois5": boxes.contiguous().numpy()}


def _levels(workload: dict) -> list[int]:
    """The RoIPool outputs a workload's op is made of (one for roi_pool, one per SPP level)."""
    if workload["op"] == "roi_pool":
        return [workload["output_size"]]
    if workload["op"] == "roi_spp":
        return list(workload["levels"])
    raise Skipped(f"no peer op for {workload['op']}")


# ONNX Runtime ----------------------------------------------------------------------

def onnxruntime_runner(workload: dict, x: torch.Tensor, boxes: torch.Tensor):
    """A callable running the workload in ONNX Runtime, and the callable's outputs -> one tensor."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError as err:
        raise Skipped(f"not installed ({err.name}): pip install 'roigen[bench]'") from None
    a = _arrays(workload, x, boxes)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))]
    if workload["op"] == "roi_align":
        if not workload.get("aligned", False):
            raise Skipped("RoiAlign's half_pixel mode is aligned=True only")
        size = workload["output_size"]
        nodes = [helper.make_node("RoiAlign", ["X", "rois", "batch"], ["Y"], mode="avg", output_height=size,
                                  output_width=size, sampling_ratio=workload["sampling_ratio"],
                                  spatial_scale=workload["spatial_scale"],
                                  coordinate_transformation_mode="half_pixel")]
        inputs += [helper.make_tensor_value_info("rois", TensorProto.FLOAT, list(a["rois"].shape)),
                   helper.make_tensor_value_info("batch", TensorProto.INT64, list(a["batch"].shape))]
        outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
        feed = {"X": a["X"], "rois": a["rois"], "batch": a["batch"]}
    else:
        levels = _levels(workload)
        nodes = [helper.make_node("MaxRoiPool", ["X", "rois5"], [f"Y{i}"], pooled_shape=[n, n],
                                  spatial_scale=workload["spatial_scale"]) for i, n in enumerate(levels)]
        inputs.append(helper.make_tensor_value_info("rois5", TensorProto.FLOAT, list(a["rois5"].shape)))
        outputs = [helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, None) for i in range(len(levels))]
        feed = {"X": a["X"], "rois5": a["rois5"]}
    model = helper.make_model(helper.make_graph(nodes, "peer", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 16)], ir_version=8)  # what ONNX Runtime reads
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


# OpenVINO --------------------------------------------------------------------------

def openvino_runner(workload: dict, x: torch.Tensor, boxes: torch.Tensor):
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError as err:
        raise Skipped(f"not installed ({err.name}): pip install 'roigen[bench]'") from None
    a = _arrays(workload, x, boxes)
    data = ops.parameter(list(x.shape), np.float32, name="X")
    if workload["op"] == "roi_align":
        if not workload.get("aligned", False):
            raise Skipped("the workload is not aligned")
        size = workload["output_size"]
        rois = ops.parameter(list(a["rois"].shape), np.float32, name="rois")
        batch = ops.parameter(list(a["batch"].shape), np.int32, name="batch")
        node = ops.roi_align(data, rois, batch, pooled_h=size, pooled_w=size,
                             sampling_ratio=workload["sampling_ratio"], spatial_scale=workload["spatial_scale"],
                             mode="avg", aligned_mode="half_pixel_for_nn")
        model = ov.Model([node], [data, rois, batch])
        feed = {"X": a["X"], "rois": a["rois"], "batch": a["batch"].astype(np.int32)}
    else:
        rois = ops.parameter(list(a["rois5"].shape), np.float32, name="rois5")
        nodes = [ops.roi_pooling(data, rois, output_roi=[n, n], spatial_scale=workload["spatial_scale"],
                                 method="max") for n in _levels(workload)]
        model = ov.Model(nodes, [data, rois])
        feed = {"X": a["X"], "rois5": a["rois5"]}
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": THREADS})
    request = compiled.create_infer_request()

    def run():
        request.infer(feed)
        return [request.get_output_tensor(i).data for i in range(len(compiled.outputs))]

    return run


RUNNERS = {"ONNX Runtime": onnxruntime_runner, "OpenVINO": openvino_runner}


def as_output(workload: dict, outputs) -> torch.Tensor:
    """A peer's outputs as the workload's op returns them (RoI-SPP: levels flattened, joined)."""
    parts = [torch.from_numpy(np.array(o)) for o in outputs]
    if workload["op"] == "roi_spp":
        return torch.cat([p.flatten(1) for p in parts], 1)
    return parts[0]


def runner(name: str, workload: dict, x: torch.Tensor, boxes: torch.Tensor, want: torch.Tensor):
    """Peer `name`'s runner for the workload, once its output has been checked against `want`
    (torchvision's); raises Skipped with the reason otherwise."""
    run = RUNNERS[name](workload, x, boxes)
    got = as_output(workload, run())
    if got.shape != want.shape:
        raise Skipped(f"output shape {tuple(got.shape)}, torchvision's {tuple(want.shape)}")
    error = float((got - want).abs().max()) if got.numel() else 0.0
    if error > TOLERANCE * max(1.0, float(want.abs().max())):
        raise Skipped(f"differs from torchvision by {error:.2g}: not timed")
    return run
