"""The benchmark workloads (workloads.json, copied from the project's shared brief)."""

from __future__ import annotations

import json
from importlib import resources

import torch


def load() -> dict:
    return json.loads(resources.files("roigen").joinpath("workloads.json").read_text())


def make_inputs(workload: dict, dtype=torch.float32):
    """Feature map and (K, 5) boxes, drawn exactly as workloads.json's `about` says."""
    n, c, h, w = workload["input"]
    k, scale = workload["boxes"], workload["spatial_scale"]
    torch.manual_seed(workload["seed"])
    wi, hi = w / scale, h / scale
    x1 = torch.rand(k) * 0.8 * wi
    y1 = torch.rand(k) * 0.8 * hi
    bw = torch.rand(k) * 0.5 * wi + 8
    bh = torch.rand(k) * 0.5 * hi + 8
    batch = torch.randint(0, n, (k,))
    boxes = torch.stack([batch.float(), x1, y1, torch.clamp(x1 + bw, max=wi - 1), torch.clamp(y1 + bh, max=hi - 1)], 1)
    features = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(workload["seed"] + 1))
    return features.to(dtype), boxes.to(dtype)


def spec_of(workload: dict, dtype: str = "float32"):
    """The spec of a workload's op with its parameters (what `bench.run_op` calls)."""
    from .specs import SPECS

    spec_cls = SPECS[workload["op"]]
    fields = {f.name for f in spec_cls.op_fields()}
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in workload.items() if k in fields}
    if "output_size" in workload:
        params["pooled_height"] = params["pooled_width"] = workload["output_size"]
    return spec_cls(**params, dtype=dtype)
