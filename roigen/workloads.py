"""The benchmark workloads (workloads.json, copied from the project's shared brief), and
workloads of one's own (the same keys, in JSON) for `roigen tune`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

# The largest box side drawn, as a fraction of the image's (workloads.json's rule: w = U(0,1) * 0.5 * Wi + 8).
BOX_FRACTION = 0.5
# Keys a workload has besides its op's parameters (spec fields, and output_size for both sides).
SHAPE_KEYS = {"op", "input", "boxes", "seed", "box_fraction", "output_size"}


def load() -> dict:
    return json.loads(resources.files("roigen").joinpath("workloads.json").read_text())


def resolve(text: str, op: str | None = None) -> tuple[str, dict]:
    """(label, workload) for `text`: a workloads.json name, or a workload of one's own in JSON,
    inline (`{"op": "roi_align", "input": [2, 256, 200, 272], "boxes": 1000, ...}`) or a
    file's path: the keys of a workloads.json entry (its op's parameters, `input` (N, C, H, W),
    `boxes`, and `seed`, default 0), plus `box_fraction` (default 0.5, workloads.json's rule),
    the largest box side drawn as a fraction of the image's.  `op` fills a missing "op"."""
    table = load()["workloads"]
    if text in table:
        return text, _runs(table[text], op)
    if text.lstrip().startswith("{"):
        source, label = text, "the inline workload"
    elif text.endswith(".json") and Path(text).is_file():
        source, label = Path(text).read_text(), f"the workload in {text}"
    else:
        raise ValueError(f"unknown workload {text!r}: a workloads.json name ({', '.join(table)}), "
                         "or a workload in JSON, inline or a .json file")
    try:
        workload = json.loads(source)
    except json.JSONDecodeError as err:
        raise ValueError(f"{label} is not JSON ({err})") from None
    return label, own(workload, op)


def own(workload, op: str | None = None) -> dict:
    """A workload of one's own, validated (`op` fills a missing "op", and must be its op)."""
    if isinstance(workload, dict) and op is not None:
        workload = {"op": op, **workload}
    return _runs(validate(workload), op)


def _runs(workload: dict, op: str | None) -> dict:
    if op is not None and workload["op"] != op:
        raise ValueError(f"the workload runs {workload['op']}, not {op!r}")
    return workload


def validate(workload) -> dict:
    """`workload` with its defaults filled in, or a ValueError naming the key at fault."""
    from .limits import reserve
    from .specs import SPECS

    if not isinstance(workload, dict):
        raise ValueError(f"a workload is a JSON object, got {type(workload).__name__}")
    op = workload.get("op")
    if op not in SPECS:
        raise ValueError(f"workload op: one of {', '.join(SPECS)}, got {op!r}")
    fields = {f.name for f in SPECS[op].op_fields()}
    unknown = sorted(set(workload) - fields - SHAPE_KEYS)
    if unknown:
        raise ValueError(f"workload key {unknown[0]!r} is neither a parameter of {op} ({', '.join(sorted(fields))}) "
                         f"nor one of {', '.join(sorted(SHAPE_KEYS))}")
    shape = workload.get("input")
    if not (isinstance(shape, list) and len(shape) == 4 and all(_positive(v) for v in shape)):
        raise ValueError(f"workload input: [N, C, H, W], positive integers, got {shape!r}")
    if not _positive(workload.get("boxes")):
        raise ValueError(f"workload boxes: a positive integer, got {workload.get('boxes')!r}")
    n, c, h, w = shape
    # make_inputs draws float32 and converts; refused here rather than by the allocator mid-run.
    reserve((n * c * h * w + 5 * workload["boxes"]) * 12, "the workload's map and boxes")
    if "spatial_scale" not in fields:
        raise ValueError(f"workload op: {op} takes no boxes on a scaled map; tuning takes ops that do")
    if "spatial_scale" not in workload:  # the boxes are drawn in image coordinates
        raise ValueError("workload spatial_scale: required (the map's size over the image's)")
    if "pooled_height" in fields and not {"output_size", "pooled_height"} & set(workload):
        raise ValueError("workload output_size: required")
    full = {"seed": 0, "box_fraction": BOX_FRACTION, **workload}
    fraction = full["box_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"workload box_fraction: a number in (0, 1], got {fraction!r}")
    if isinstance(full["seed"], bool) or not isinstance(full["seed"], int):
        raise ValueError(f"workload seed: an integer, got {full['seed']!r}")
    try:
        spec = spec_of(full)
        spec.check_input_shape(tuple(shape))
    except (TypeError, ValueError) as err:
        raise ValueError(f"workload parameters of {op}: {err}") from None
    if spec.row_columns != 5:  # make_inputs draws (batch, x1, y1, x2, y2) rows
        raise ValueError(f"workload op: {op}'s boxes are not (batch, x1, y1, x2, y2) rows; "
                         "tuning takes ops whose boxes are")
    return full


def describe(workload: dict) -> str:
    """A workload's short label: its op, input shape and box count."""
    return f"{workload['op']} {'x'.join(map(str, workload['input']))}, {workload['boxes']} boxes"


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def make_inputs(workload: dict, dtype=torch.float32):
    """Feature map and (K, 5) boxes, drawn exactly as workloads.json's `about` says."""
    n, c, h, w = workload["input"]
    k, scale = workload["boxes"], workload["spatial_scale"]
    fraction = workload.get("box_fraction", BOX_FRACTION)
    # A generator of its own, seeded as torch.manual_seed(seed) seeds the global one: the same
    # draws, and the caller's random stream left alone.
    gen = torch.Generator().manual_seed(workload["seed"])
    wi, hi = w / scale, h / scale
    x1 = torch.rand(k, generator=gen) * 0.8 * wi
    y1 = torch.rand(k, generator=gen) * 0.8 * hi
    bw = torch.rand(k, generator=gen) * fraction * wi + 8
    bh = torch.rand(k, generator=gen) * fraction * hi + 8
    batch = torch.randint(0, n, (k,), generator=gen)
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
