"""PyTorch integration: custom-op checks, torch.compile, modules, zero-copy DLPack."""

from __future__ import annotations

import pytest
import torch
import torchvision
from boxes import random_rois

import roigen.ops as R
from roigen import runtime
from roigen.build import build
from roigen.specs import RoIAlignSpec

OPS = [
    ("roi_align", (1.0, 3, 2, 2, True, "avg")),
    ("roi_align", (0.5, 2, 3, -1, False, "max")),
    ("roi_pool", (0.5, 3, 3)),
]


@pytest.mark.parametrize("name, params", OPS, ids=[f"{n}-{p[-1]}" for n, p in OPS])
def test_opcheck(name, params, gen):
    x = torch.randn(2, 5, 7, 8, generator=gen, requires_grad=True)
    rois = random_rois(2, 7, 8, 6, params[0], gen, kinds=("inside", "partial"))
    torch.library.opcheck(getattr(torch.ops.roigen, name), (x, rois, *params))


def test_schema_is_derived_from_the_spec():
    schema = str(torch.ops.roigen.roi_align.default._schema)
    fields = [f.name for f in RoIAlignSpec.op_fields()]
    assert fields == ["spatial_scale", "pooled_height", "pooled_width", "sampling_ratio", "aligned", "mode"]
    for field in fields:
        assert field in schema


def test_torch_compile_fullgraph(gen):
    x = torch.randn(2, 16, 10, 12, generator=gen, requires_grad=True)
    rois = random_rois(2, 10, 12, 9, 0.5, gen)

    def head(t, boxes):
        return (R.roi_align(t, boxes, 4, 0.5, 2, True) + R.roi_pool(t, boxes, 4, 0.5)).relu().sum()

    compiled = torch.compile(head, fullgraph=True)
    expected = head(x, rois)
    (grad_expected,) = torch.autograd.grad(expected, x)
    got = compiled(x, rois)
    (grad_got,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)


def test_modules_match_torchvision(gen):
    x = torch.randn(2, 8, 10, 12, generator=gen)
    rois = random_rois(2, 10, 12, 9, 0.25, gen)
    ours, theirs = R.RoIAlign((3, 5), 0.25, 2, aligned=True), torchvision.ops.RoIAlign((3, 5), 0.25, 2, aligned=True)
    torch.testing.assert_close(ours(x, rois), theirs(x, rois), rtol=1e-5, atol=1e-5)
    ours, theirs = R.RoIPool(4, 0.25), torchvision.ops.RoIPool(4, 0.25)
    torch.testing.assert_close(ours(x, rois), theirs(x, rois))
    assert "sampling_ratio=2" in repr(R.RoIAlign(3, 0.25, 2))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_feature_map_crosses_to_tvm_without_copy(monkeypatch, memory_format, gen):
    """The map handed to the layout kernel is the caller's memory, not a copy."""
    x = torch.randn(2, 32, 6, 7, generator=gen).contiguous(memory_format=memory_format)
    rois = random_rois(2, 6, 7, 4, 1.0, gen)
    seen = []
    original = runtime.to_tvm

    def recording(t):
        view = original(t)
        seen.append(view.data_ptr())
        return view

    monkeypatch.setattr(runtime, "to_tvm", recording)
    R.roi_align(x, rois, 2)
    assert seen[0] == x.data_ptr()


def test_kernels_are_built_once_per_spec():
    spec = RoIAlignSpec(spatial_scale=1.0, pooled_height=2, pooled_width=2)
    assert build(spec) is build(spec)
    # Half types share the float32 build.
    import dataclasses

    assert build(dataclasses.replace(spec, dtype="float16")) is build(spec)
