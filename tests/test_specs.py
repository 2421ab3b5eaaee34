"""Specs validate on construction and are the single source of the op's facts."""

from __future__ import annotations

import dataclasses

import pytest

from roigen.specs import SPECS, RoIAlignSpec, RoIPoolSpec, output_size_pair


def test_specs_are_frozen_and_hashable():
    spec = RoIAlignSpec(spatial_scale=0.25, pooled_height=7, pooled_width=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.aligned = True
    assert hash(spec) == hash(RoIAlignSpec(spatial_scale=0.25, pooled_height=7, pooled_width=7))


def test_key_names_every_parameter():
    spec = RoIPoolSpec(spatial_scale=0.0625, pooled_height=7, pooled_width=5, dtype="float64", layout="NHWC")
    for text in ('"op": "roi_pool"', '"pooled_width": 5', '"dtype": "float64"', '"layout": "NHWC"'):
        assert text in spec.key()


def test_half_types_share_the_float32_kernel():
    spec = RoIAlignSpec(spatial_scale=1.0, pooled_height=2, pooled_width=2, dtype="bfloat16")
    assert spec.compute_dtype == "float32" and spec.kernel_spec().dtype == "float32"


@pytest.mark.parametrize("kwargs, error", [
    ({"dtype": "int32"}, TypeError),
    ({"layout": "CHWN"}, ValueError),
    ({"spatial_scale": 0.0}, ValueError),
    ({"pooled_height": 0}, ValueError),
    ({"pooled_width": True}, TypeError),
    ({"mode": "sum"}, ValueError),
    ({"sampling_ratio": 2.0}, TypeError),
])
def test_invalid_specs_are_refused(kwargs, error):
    base = {"spatial_scale": 1.0, "pooled_height": 2, "pooled_width": 2}
    with pytest.raises(error):
        RoIAlignSpec(**{**base, **kwargs})


def test_output_size_pair():
    assert output_size_pair(7) == (7, 7) and output_size_pair((3, 5)) == (3, 5)
    for bad in (0, (1, 0), "7", (1, 2, 3), True):
        with pytest.raises((TypeError, ValueError)):
            output_size_pair(bad)


def test_every_spec_has_compute_and_reference():
    from roigen.compute import FAMILIES, compute_module
    from roigen.reference import REFERENCES

    for name, cls in SPECS.items():
        assert name in REFERENCES
        for family in FAMILIES:
            assert callable(compute_module(family, cls).kernels)
