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
