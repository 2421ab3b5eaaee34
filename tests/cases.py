"""The test matrix of every op, derived from its spec.

Each spec field listed in FIELD_VALUES is crossed with the others; fields not
listed (spatial_scale, output size) are set by each test.  Adding an op means
adding its spec, a reference and (where one exists) an oracle here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torchvision

import roigen.ops
from roigen import reference
from roigen.specs import SPECS

FIELD_VALUES = {
    "sampling_ratio": [-1, 0, 1, 2, 3],
    "aligned": [True, False],
    "mode": ["avg", "max"],
}


@dataclass(frozen=True)
class OpCase:
    name: str
    params: tuple  # (field, value) pairs

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def roigen(self, input, boxes, output_size, spatial_scale):
        return getattr(roigen.ops, self.name)(input, boxes, output_size, spatial_scale, **self.kwargs)

    def reference(self, input, boxes, output_size, spatial_scale):
        return reference.REFERENCES[self.name](input, boxes, output_size, spatial_scale, **self.kwargs)

    @property
    def oracle(self) -> Callable | None:
        """torchvision's op with these parameters, where torchvision has it."""
        kwargs = self.kwargs
        if kwargs.pop("mode", "avg") != "avg":
            return None
        fn = getattr(torchvision.ops, self.name)
        return lambda input, boxes, output_size, spatial_scale: fn(input, boxes, output_size, spatial_scale, **kwargs)

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
