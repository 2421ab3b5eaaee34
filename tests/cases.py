"""The test matrix of every op, derived from its spec.

Each spec field listed in FIELD_VALUES is varied; the remaining fields
(spatial scale, output size) are fixed here.  Fields are crossed pairwise
(every pair of values of every two fields appears in some case), not as a
full product: the kernels branch on each field, and no branch depends on three
at once.  roi_warp, roi_align's kernels with a snapped box, takes each value
once (EACH_VALUE_ONCE).  How to call an op, its oracle and its reference come from its
adapter (`roigen.ops._adapter`), so adding an op adds nothing here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from roigen.ops import _adapter
from roigen.specs import SPECS

from boxes import KINDS, as_rotated, random_rois, with_offsets

OUTPUT = (3, 4)
SCALE = 0.5
FIELD_VALUES = {
    # Adaptive and a fixed grid: the kernels branch on `<= 0` only; 0 and other
    # fixed ratios are constants of the same code (test_properties draws them).
    "sampling_ratio": [-1, 2],
    "aligned": [True, False],
    "mode": ["avg", "max"],
    "levels": [(4, 2, 1), (3, 1)],
    "angle_unit": ["deg", "rad"],
    "clockwise": [False, True],
}


def pairwise(fields: dict[str, list]) -> list[dict]:
    """Rows of field values in which every pair of values of every two fields appears:
    the full product of the two largest fields, each other field filled in greedily."""
    names = sorted(fields, key=lambda n: -len(fields[n]))
    if len(names) <= 2:
        return [dict(zip(names, v)) for v in itertools.product(*(fields[n] for n in names))]
    first, second, *rest = names
    rows = [{first: a, second: b} for a, b in itertools.product(fields[first], fields[second])]
    for name in rest:
        uncovered = {(other, row[other], v) for row in rows for other in row for v in fields[name]}
        for i, row in enumerate(rows):
            def rank(v, row=row, i=i, uncovered=uncovered, values=fields[name]):
                """New pairs covered, then the value's turn in a round robin."""
                gain = sum((other, row[other], v) in uncovered for other in row)
                return gain, -((values.index(v) - i) % len(values))

            choice = max(fields[name], key=rank)
            row[name] = choice
            uncovered -= {(other, row[other], choice) for other in row if other != name}
        for other, value, v in sorted(uncovered, key=str):  # pairs the greedy pass left: one row each
            rows.append({**{n: fields[n][0] for n in rows[0]}, other: value, name: v})
    return [{n: row[n] for n in names} for row in rows]


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

    def spec(self, dtype="float32"):
        """The op's spec for this case at the matrix's output size and scale (float32)."""
        fields = {f.name for f in self.spec_cls.op_fields()}
        fixed = {"spatial_scale": SCALE, "pooled_height": OUTPUT[0], "pooled_width": OUTPUT[1]}
        return self.spec_cls(**self.kwargs, **{k: v for k, v in fixed.items() if k in fields}, dtype=dtype)

    def op_params(self, output=OUTPUT, scale=SCALE) -> dict:
        """The op's parameters for this case, at an output size and scale."""
        params = _adapter.params_of(self.spec())
        changes = {"spatial_scale": scale, "pooled_height": output[0], "pooled_width": output[1]}
        return {**params, **{k: v for k, v in changes.items() if k in params}}

    def boxes(self, n, h, w, count, scale, gen, *, kinds=KINDS, dtype=torch.float32):
        """`count` random boxes of `kinds` in this op's format: random_rois, for rotated ops
        the same boxes at random angles, for deformable ones with random offsets."""
        rois = random_rois(n, h, w, count, scale, gen, kinds=kinds, dtype=dtype)
        if self.spec_cls.box_columns == 6:
            return as_rotated(rois, gen, angle_unit=self.kwargs.get("angle_unit", "deg"))
        if self.spec_cls.columns_per_bin:
            return with_offsets(rois, OUTPUT[0] * OUTPUT[1], gen)
        return rois

    def no_boxes(self, dtype=torch.float32):
        return torch.zeros(0, self.spec().row_columns, dtype=dtype)

    def roigen(self, x, rois, target="auto", deterministic=False, **kw):
        return _adapter.run(self.spec_cls, x, rois, self.op_params(**kw), target=target, deterministic=deterministic)

    def reference(self, x, rois, **kw):
        return _adapter.reference(self.spec_cls, self.op_params(**kw))(x, rois)

    @property
    def oracle(self):
        """The same op from a peer (torchvision, torch), where one exists for these parameters."""
        return _adapter.oracle(self.spec_cls, self.op_params())

    @property
    def oracle_gradient(self) -> bool:
        # torchvision's ps_roi_pool backward disagrees with its own forward at the
        # map's last row/column (see compute/cpu/_ps_roi.py); compare gradients with
        # the reference and gradcheck instead.
        return self.name != "ps_roi_pool"

    @property
    def float32_tolerance(self) -> float:
        """How close float32 results come to the float64 reference.  PrRoIPool divides by the
        bin's area: float32 rounding of the edges (~1e-6 at these coordinates) of a bin of
        0.06 pixels, as a tiny box has, moves its mean by ~2e-5."""
        return 1e-4 if self.name == "prroi_pool" else 1e-5

    @property
    def float64_tolerance(self) -> float:
        """Likewise in float64, for boxes as small as 1e-6 pixels (tests/hostile_runner.py)."""
        return 1e-7 if self.name == "prroi_pool" else 1e-9

    def __str__(self):
        return self.name + "".join(f"-{k}={v}" for k, v in self.params)


# Ops whose kernels are another op's (roi_warp: roi_align's with a snapped box) get
# every value of every field once, not every pair: the pairs are the other op's.
EACH_VALUE_ONCE = {"roi_warp"}


def each_value_once(fields: dict[str, list]) -> list[dict]:
    """Rows in which every value of every field appears at least once (round robin)."""
    rows = max((len(values) for values in fields.values()), default=1)
    return [{name: values[i % len(values)] for name, values in fields.items()} for i in range(rows)]


def cases(ops=None) -> list[OpCase]:
    out = []
    for name, spec_cls in SPECS.items():
        if ops and name not in ops:
            continue
        fields = [f.name for f in spec_cls.op_fields() if f.name in FIELD_VALUES]
        cover = each_value_once if name in EACH_VALUE_ONCE else pairwise
        for row in cover({f: FIELD_VALUES[f] for f in fields}):
            out.append(OpCase(name, tuple((f, row[f]) for f in fields)))
    return out


ALL = cases()
WITH_ORACLE = [c for c in ALL if c.oracle is not None]
# One case per op, for the tests that are about plumbing rather than parameters.
ONE_PER_OP = list({c.name: c for c in reversed(ALL)}.values())
BOXED_ONE_PER_OP = [c for c in ONE_PER_OP if c.takes_boxes]
# Ops differentiable in their boxes: one case per op, mode and angle unit (the box kernels'
# shapes; aligned and sampling_ratio go through the same code, covered by the oracle tests).
BOX_GRADIENT = list({(c.name, c.kwargs.get("mode"), c.kwargs.get("angle_unit")): c
                     for c in reversed(ALL) if c.spec_cls.box_gradient}.values())


def problem(case: OpCase, gen, dtype=torch.float32, shape=(2, 11, 13), channels=None, kinds=KINDS, count=18):
    """A random map (N, C, H, W) and, for boxed ops, `count` boxes of `kinds` (at SCALE)."""
    n, h, w = shape
    x = torch.randn(n, channels or case.channels(), h, w, generator=gen, dtype=torch.float64).to(dtype)
    rois = case.boxes(n, h, w, count, SCALE, gen, kinds=kinds, dtype=dtype) if case.takes_boxes else None
    return x, rois


def box_coordinates(rois):
    """(batch column, coordinate columns requiring grad): gradcheck perturbs every input it is
    given, and the batch index must stay an integer."""
    return rois[:, :1].detach(), rois[:, 1:].detach().clone().requires_grad_()


def forward_backward_boxes(fn, x, rois, grad_seed=1):
    """fn's output and its gradients w.r.t. the input and the box coordinates (seeded output gradient)."""
    x = x.detach().clone().requires_grad_()
    index, coords = box_coordinates(rois)
    out = fn(x, torch.cat([index, coords], 1))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    gx, gb = torch.autograd.grad(out, (x, coords), grad.to(out.dtype))
    return out.detach(), gx, gb


def forward_backward(fn, x, rois, grad_seed=1):
    """fn's output and the input gradient for a seeded random output gradient."""
    x = x.detach().clone().requires_grad_()
    out = fn(x, rois)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    out.backward(grad.to(out.dtype).to(out.device))
    return out.detach(), x.grad
