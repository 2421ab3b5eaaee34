"""PyTorch integration: custom-op checks, torch.compile, modules, zero-copy DLPack."""

from __future__ import annotations

import pytest
import torch
import torchvision

import roigen.ops as R
from roigen.backends import llvm as cpu_backend
from roigen.build import build
from roigen.specs import RoIAlignSpec

from boxes import random_rois
from cases import ALL, SCALE

# The first and the last case of each op (pairwise rows differ in every field).
OPCHECK = list({str(c): c for name in dict.fromkeys(c.name for c in ALL)
                for c in (next(c for c in ALL if c.name == name), [c for c in ALL if c.name == name][-1])}.values())


@pytest.mark.parametrize("case", OPCHECK, ids=str)
def test_opcheck(case, gen):
    x = torch.randn(2, case.channels(5), 7, 8, generator=gen, requires_grad=True)
    params = [list(v) if isinstance(v, tuple) else v for v in case.op_params().values()]  # the schema's int[]
    rois = (case.boxes(2, 7, 8, 6, SCALE, gen, kinds=("inside", "partial")),) if case.takes_boxes else ()
    torch.library.opcheck(getattr(torch.ops.roigen, case.name), (x, *rois, *params))


def test_opcheck_multi_scale(gen):
    features = [torch.randn(2, 4, 16, 16, generator=gen, requires_grad=True),
                torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)]
    rois = random_rois(2, 16, 16, 8, 0.25, gen, kinds=("inside",))
    levels = torch.tensor([0, 1] * 4)
    torch.library.opcheck(torch.ops.roigen.multi_scale_roi_align,
                          (features, rois, levels, [2, 2], [0.25, 0.125], 2, False))


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
        pooled = (R.roi_align(t, boxes, 4, 0.5, 2, True) + R.roi_pool(t, boxes, 4, 0.5)
                  + R.roi_warp(t, boxes, 4, 0.5, 2) + R.ps_roi_align(t, boxes, 2, 0.5).repeat(1, 4, 2, 2)
                  + R.ps_roi_pool(t, boxes, 2, 0.5).repeat(1, 4, 2, 2)).relu().sum()
        pyramids = R.roi_spp(t, boxes, (2, 1), 0.5).sum() + R.spp(t, (2, 1)).sum()
        return pooled + pyramids + R.multi_scale_roi_align([t, t[..., ::2, ::2]], boxes, 4, [0.5, 0.25], 2).sum()

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
    ps = torch.randn(2, 18, 10, 12, generator=gen)
    torch.testing.assert_close(R.PSRoIAlign(3, 0.25, 2)(ps, rois), torchvision.ops.PSRoIAlign(3, 0.25, 2)(ps, rois),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(R.PSRoIPool(3, 0.25)(ps, rois), torchvision.ops.PSRoIPool(3, 0.25)(ps, rois),
                               rtol=1e-5, atol=1e-5)
    pyramid = torch.cat([torch.nn.functional.adaptive_max_pool2d(x, n).flatten(1) for n in (4, 2, 1)], 1)
    torch.testing.assert_close(R.SpatialPyramidPool()(x), pyramid)
    torch.testing.assert_close(R.RoISPP((2, 1), 0.25)(x, rois),
                               torch.cat([torchvision.ops.roi_pool(x, rois, n, 0.25).flatten(1) for n in (2, 1)], 1))
    assert "mode='avg'" in repr(R.RoIWarp(3, 0.25))


def test_multi_scale_module_matches_torchvision(gen):
    features = {"p2": torch.randn(2, 8, 64, 64, generator=gen, requires_grad=True),
                "p3": torch.randn(2, 8, 32, 32, generator=gen, requires_grad=True),
                "p4": torch.randn(2, 8, 16, 16, generator=gen, requires_grad=True),
                "p5": torch.randn(2, 8, 8, 8, generator=gen, requires_grad=True)}
    boxes = []
    for _ in range(2):  # sizes from tiny to the whole image, so every level is used
        xy = torch.rand(12, 2, generator=gen) * 200
        wh = torch.exp(torch.rand(12, 2, generator=gen) * 6) + 1
        boxes.append(torch.cat([xy, xy + wh], 1))
    shapes = [(256, 256), (250, 240)]
    ours = R.MultiScaleRoIAlign(list(features), 7, 2)(features, boxes, shapes)
    theirs = torchvision.ops.MultiScaleRoIAlign(list(features), 7, 2)(features, boxes, shapes)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad = torch.randn(ours.shape, generator=gen)
    for a, b in zip(torch.autograd.grad(ours, list(features.values()), grad),
                    torch.autograd.grad(theirs, list(features.values()), grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_multi_scale_matches_reference_and_gradcheck(gen):
    from roigen import reference

    features = [torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64, requires_grad=True),
                torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)]
    rois = random_rois(2, 16, 16, 10, 0.25, gen, kinds=("inside", "partial", "tiny", "huge"), dtype=torch.float64)
    scales = [0.25, 0.125]
    ours = R.multi_scale_roi_align(features, rois, 3, scales, 2, canonical_scale=32, canonical_level=3)
    ref = reference.multi_scale_roi_align(features, rois, 3, scales, 2, canonical_scale=32, canonical_level=3)
    torch.testing.assert_close(ours, ref)
    assert torch.autograd.gradcheck(
        lambda a, b: R.multi_scale_roi_align([a, b], rois, 3, scales, 2, canonical_scale=32, canonical_level=3),
        tuple(features), eps=1e-6, atol=1e-6)
    empty = R.multi_scale_roi_align(features, torch.zeros(0, 5, dtype=torch.float64), 3, scales)
    assert empty.shape == (0, 3, 3, 3)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_multi_scale_with_an_empty_level_matches_reference(memory_format, gen):
    """Every level runs on every box on the CPU (the others blanked): rows must come out in box
    order, a level no box picks must get no output rows and a zero gradient."""
    from roigen import reference
    from roigen.ops.multi_scale import assign_levels

    features = [torch.randn(1, 2, 16 >> i, 16 >> i, generator=gen, dtype=torch.float64)
                .contiguous(memory_format=memory_format).requires_grad_() for i in range(3)]
    scales = [0.25, 0.125, 0.0625]
    # Box sides of 2-20 px pick level 0, of 70-120 px level 2 (canonical 32 px at level 3).
    side = torch.where(torch.rand(12, 1, generator=gen) < 0.5, torch.rand(12, 2, generator=gen) * 18 + 2,
                       torch.rand(12, 2, generator=gen) * 50 + 70).double()
    corner = torch.rand(12, 2, generator=gen, dtype=torch.float64) * 60 - 10
    rois = torch.cat([torch.zeros(12, 1, dtype=torch.float64), corner, corner + side], 1)
    assert torch.bincount(assign_levels(rois, scales, 32, 3), minlength=3)[1] == 0
    args = (3, scales, 2, True, 32, 3)
    ours = R.multi_scale_roi_align(features, rois, *args)
    torch.testing.assert_close(ours, reference.multi_scale_roi_align(features, rois, *args))
    assert torch.autograd.gradcheck(lambda *f: R.multi_scale_roi_align(list(f), rois, *args), tuple(features),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_feature_map_crosses_to_tvm_without_copy(monkeypatch, memory_format, gen):
    """The map handed to the kernels (the layout pass, or a fused RoI kernel) is the
    caller's memory, not a copy."""
    x = torch.randn(2, 32, 6, 7, generator=gen).contiguous(memory_format=memory_format)
    rois = random_rois(2, 6, 7, 4, 1.0, gen)
    seen = []
    original = cpu_backend.to_tvm

    def recording(t):
        view = original(t)
        seen.append(view.data_ptr())
        return view

    monkeypatch.setattr(cpu_backend, "to_tvm", recording)
    R.roi_align(x, rois, 2)
    assert x.data_ptr() in seen


def test_kernels_are_built_once_per_spec():
    spec = RoIAlignSpec(spatial_scale=1.0, pooled_height=2, pooled_width=2)
    assert build(spec) is build(spec)
    # Half types share the float32 build.
    import dataclasses

    assert build(dataclasses.replace(spec, dtype="float16")) is build(spec)
