"""The test matrix of every op, derived from its spec.

Each spec field listed in FIELD_VALUES is crossed with the others; the
remaining fields (spatial scale, output size) are fixed here.  Adding an op
means adding its spec, a reference, a call adapter and (where one exists) an
oracle here.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision

import roigen.ops
from roigen import reference
from roigen.specs import SPECS

OUTPUT = (3, 4)
SCALE = 0.5
FIELD_VALUES = {
    "sampling_ratio": [-1, 0, 1, 2, 3],
    "aligned": [True, False],
    "mode": ["avg", "max"],
    "levels": [(4, 2, 1), (3, 1)],
}


def snap(rois: torch.Tensor, scale: float) -> torch.Tensor:
    """Box corners scaled and C-rounded (half away from zero): RoIWarp's oracle input."""
    out = rois.clone()
    v = rois[:, 1:] * scale
    out[:, 1:] = torch.sign(v) * torch.floor(v.abs() + 0.5)
    return out


@dataclass(frozen=True)
class OpCase:
    name: str
    params: tuple  # (field, value) pairs

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    @property
    def spec_cls(self):
        return SPECS[self.name]

    @property
    def takes_boxes(self) -> bool:
        return self.spec_cls.takes_boxes

    def channels(self, base: int = 20) -> int:
        """Position-sensitive ops need C = C_out * PH * PW."""
        return 3 * OUTPUT[0] * OUTPUT[1] if not self.spec_cls.packed else base

    def _call(self, fn, x, rois, output=OUTPUT, scale=SCALE):
        if self.name == "spp":
            return fn(x, **self.kwargs)
        if self.name == "roi_spp":
            return fn(x, rois, spatial_scale=scale, **self.kwargs)
        return fn(x, rois, output, scale, **self.kwargs)

    def spec(self, dtype="float32"):
        """The op's spec for this case at the matrix's output size and scale (float32)."""
        fields = {f.name for f in self.spec_cls.op_fields()}
        fixed = {"spatial_scale": SCALE, "pooled_height": OUTPUT[0], "pooled_width": OUTPUT[1]}
        return self.spec_cls(**self.kwargs, **{k: v for k, v in fixed.items() if k in fields}, dtype=dtype)

    def roigen(self, x, rois, target="auto", deterministic=False, **kw):
        fn = functools.partial(getattr(roigen.ops, self.name), target=target, deterministic=deterministic)
        return self._call(fn, x, rois, **kw)

    def reference(self, x, rois, **kw):
        return self._call(reference.REFERENCES[self.name], x, rois, **kw)

    @property
    def oracle(self) -> Callable | None:
        """The same op from torchvision (or torch), where one exists for these parameters."""
        kw, tv = self.kwargs, torchvision.ops
        if self.name in ("roi_align", "roi_warp") and kw["mode"] != "avg":
            return None
        return {
            "roi_align": lambda x, r: tv.roi_align(x, r, OUTPUT, SCALE, kw.get("sampling_ratio"), kw.get("aligned")),
            "roi_pool": lambda x, r: tv.roi_pool(x, r, OUTPUT, SCALE),
            "roi_warp": lambda x, r: tv.roi_align(x, snap(r, SCALE), OUTPUT, 1.0, kw.get("sampling_ratio"), False),
            "roi_spp": lambda x, r: torch.cat([tv.roi_pool(x, r, n, SCALE).flatten(1) for n in kw.get("levels", ())], 1),
            "spp": lambda x, r: torch.cat(
                [(F.adaptive_max_pool2d if kw.get("mode") == "max" else F.adaptive_avg_pool2d)(x, n).flatten(1)
                 for n in kw.get("levels", ())], 1),
            "ps_roi_align": lambda x, r: tv.ps_roi_align(x, r, OUTPUT, SCALE, kw.get("sampling_ratio")),
            "ps_roi_pool": lambda x, r: tv.ps_roi_pool(x, r, OUTPUT, SCALE),
        }[self.name]

    @property
    def oracle_gradient(self) -> bool:
        # torchvision's ps_roi_pool backward disagrees with its own forward at the
        # map's last row/column (see compute/ps_roi.py); compare gradients with
        # the reference and gradcheck instead.
        return self.name != "ps_roi_pool"

    def __str__(self):
        return self.name + "".join(f"-{k}={v}" for k, v in self.params)


def cases(ops=None) -> list[OpCase]:
    out = []
    for name, spec_cls in SPECS.items():
        if ops and name not in ops:
            continue
        fields = [f.name for f in spec_cls.op_fields() if f.name in FIELD_VALUES]
        for values in itertools.product(*(FIELD_VALUES[f] for f in fields)):
            out.append(OpCase(name, tuple(zip(fields, values))))
    return out


ALL = cases()
WITH_ORACLE = [c for c in ALL if c.oracle is not None]
# One case per op, for the tests that are about plumbing rather than parameters.
ONE_PER_OP = list({c.name: c for c in reversed(ALL)}.values())
BOXED_ONE_PER_OP = [c for c in ONE_PER_OP if c.takes_boxes]
