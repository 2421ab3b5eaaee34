"""Timing kernels on a device of a TVM RPC tracker, through meta_schedule's RPCRunner.

The runner uploads the library we export and calls our evaluator with a
session on the remote device.  Its default argument allocation fills every
buffer with random bytes, which for RoI kernels means random batch indices
(out-of-bounds reads), so `problem` carries the workload's own arrays and the
call sequence of the kernel contract (the same sequence the backends'
kernels make with torch tensors), and the evaluator times
each direction's kernels: the RoI kernel, with its layout pass where the
schedule does not fuse it (the sample tables, a fraction of a percent, are
filled once, untimed).  LLVM and CUDA targets: Vulkan
kernels are run by wgpu, which TVM's RPC server does not host.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

import numpy as np


def _problem(spec, target, sched, workload: dict, kernels) -> dict:
    """The arrays and calls that run the op's kernels (named `kernels`) once forward and once
    backward, as the family's kernel contract has them called."""
    import torch

    from . import workloads

    x, rois = workloads.make_inputs(workload)
    n, c, h, w = x.shape
    k = rois.shape[0]
    out_shape = spec.kernel_output_shape(x.shape, k)
    aux = math.prod(out_shape) if spec.aux_outputs else 0
    grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(7))
    arrays = {"rois": rois.numpy(), "grad": grad.numpy(), "out": np.zeros(out_shape, "float32"),
              "aux": np.zeros(aux, "int32")}
    if target.family == "gpu":
        arrays["x"] = x.permute(0, 2, 3, 1).contiguous().numpy()
        arrays["grad_input"] = np.zeros((n, h, w, c), "float32")
        backward = "backward_atomic" if "backward_atomic" in kernels else "backward"
        return {"arrays": arrays, "tables": False,
                "timed": [[("forward", ["x", "rois", "out", "aux"])],
                          [(backward, ["grad", "rois", "aux", "grad_input"])]]}
    arrays["x"] = x.numpy()
    arrays["grad_input"] = np.zeros((n, c, h, w), "float32")
    tables = "tables" in kernels  # the align family's per-box sample tables
    boxes = ["rois", "itab", "ftab"] if tables else ["rois"]
    forward = [("forward", ["x", *boxes, "out", "aux"])]
    backward = [("backward", ["grad", *boxes, "aux", "grad_input"])]
    # A direction with a layout pass (the CPU schedule's `fuse` off) is timed with it, as
    # the ops run it (backends/llvm.py: Kernels).
    params = sched.runtime_params()
    if layout := params["layout_pass"]["forward"]:
        lanes = params["lanes"]["forward"]
        arrays["data"] = np.zeros((n, math.ceil(c / lanes), h, w, lanes), "float32")
        forward = [(layout, ["x", "data"]), ("forward", ["data", *boxes, "out", "aux"])]
    if layout := params["layout_pass"]["backward"]:
        lanes = params["lanes"]["backward"]
        arrays["grad_data"] = np.zeros((n, math.ceil(c / lanes), h, w, lanes), "float32")
        backward = [("backward", ["grad", *boxes, "aux", "grad_data"]), (layout, ["grad_data", "grad_input"])]
    return {"arrays": arrays, "tables": tables, "height": h, "width": w, "timed": [forward, backward]}


def _alloc(session, device, args_info, alloc_repeat):
    return [[]]  # the evaluator uploads the workload's own arrays


def evaluator(problem: dict):
    """An RPCRunner f_run_evaluator timing problem's kernels (seconds, forward then backward)."""

    def run(session, rt_mod, device, evaluator_config, repeated_args):
        import tvm

        args = {name: tvm.runtime.tensor(value, device) for name, value in problem["arrays"].items()}
        if problem["tables"]:
            size = tvm.runtime.tensor(np.zeros(1, "int64"), device)
            rt_mod["table_size"](args["rois"], size)
            entries = int(size.numpy()[0])
            k = problem["arrays"]["rois"].shape[0]
            args["itab"] = tvm.runtime.tensor(np.zeros((k, entries), "int32"), device)
            args["ftab"] = tvm.runtime.tensor(np.zeros((k, entries), "float32"), device)
            rt_mod["tables"](args["rois"], args["itab"], args["ftab"], problem["height"], problem["width"])
        for calls in problem["timed"]:  # run once in order: a pack fills what its kernel reads
            for name, names in calls:
                rt_mod[name](*(args[n] for n in names))
        seconds = []
        for calls in problem["timed"]:  # a direction's time: the sum of its kernels' medians
            total = 0.0
            for name, names in calls:
                timer = rt_mod.time_evaluator(name, device, number=evaluator_config.number,
                                              repeat=evaluator_config.repeat,
                                              min_repeat_ms=evaluator_config.min_repeat_ms)
                total += statistics.median(timer(*(args[n] for n in names)).results)
            seconds.append(total)
        return seconds

    return run


def measure_remote(spec, target, knobs: dict, workload: dict, repeats: int, tracker: str,
                   key: str) -> tuple[float, float]:
    """(forward ms, backward ms) of the kernels built with `knobs`, on a device the tracker
    at HOST:PORT lends under `key`."""
    from tvm.s_tir import meta_schedule as ms

    from .backends import backend_for
    from .build import compile_kernels, plan

    backend = backend_for(target)
    if not backend.builds_library:
        raise ValueError(f"--rpc: {target.name}'s kernels ({backend.name}) are no library TVM's RPC server "
                         f"can host; tune {target.name} devices locally")
    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--rpc must be HOST:PORT, got {tracker!r}")
    sched, _ = plan(spec, target, knobs)
    compiled, funcs = compile_kernels(spec, target, sched)
    with tempfile.TemporaryDirectory(prefix="roigen-rpc-") as tmp:
        library = Path(tmp) / "kernels.so"
        backend.library(compiled, target)(library)
        runner = ms.runner.RPCRunner(
            rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                           session_timeout_sec=300),
            evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=repeats, min_repeat_ms=0),
            f_alloc_argument=_alloc, f_run_evaluator=evaluator(_problem(spec, target, sched, workload, set(funcs))))
        (future,) = runner.run([ms.runner.RunnerInput(str(library), backend.device_type, [])])
        result = future.result()
    if result.error_msg:
        raise RuntimeError(result.error_msg.strip().splitlines()[-1])
    forward, backward = (float(s) * 1e3 for s in result.run_secs)
    return forward, backward
