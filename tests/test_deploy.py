"""Deployment: ONNX export run in ONNX Runtime, autocast, FX tracing and torch.export."""

from __future__ import annotations

import heads
import pytest
import torch
import torchvision

import roigen.ops as R

from boxes import random_rois
from cases import OUTPUT, SCALE

onnxruntime = pytest.importorskip("onnxruntime")
roigen_onnx = pytest.importorskip("roigen.onnx")


class Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, rois):
        return self.fn(x, rois)


def _export(module, args, path, dynamic_shapes=None):
    program = torch.onnx.export(module.eval(), args, dynamo=True, verbose=False, dynamic_shapes=dynamic_shapes,
                                custom_translation_table=roigen_onnx.translations())
    program.save(str(path))
    return onnxruntime.InferenceSession(str(path))


def _run(session, args):
    flat = torch.utils._pytree.tree_leaves(args)
    return [torch.from_numpy(v) for v in session.run(None, {i.name: a.numpy()
                                                            for i, a in zip(session.get_inputs(), flat)})]


# The test matrix's float32 specs (OUTPUT, SCALE), whose kernels other tests build too;
# FPN's second level (SCALE / 2) is this file's own.
PYRAMID = [SCALE, SCALE / 2]
# The test matrix's float32 specs (OUTPUT, SCALE), whose kernels other tests build too.
TRANSLATED = {
    "roi_align-aligned-adaptive": lambda x, r: R.roi_align(x, r, OUTPUT, SCALE, -1, True),
    "roi_align-legacy": lambda x, r: R.roi_align(x, r, OUTPUT, SCALE, 2, False),
    "roi_warp": lambda x, r: R.roi_warp(x, r, OUTPUT, SCALE, -1),
    "roi_pool": lambda x, r: R.roi_pool(x, r, OUTPUT, SCALE),
    "roi_spp": lambda x, r: R.roi_spp(x, r, (3, 1), SCALE),
    "spp": lambda x, r: R.spp(x, (3, 1)),
    "multi_scale_roi_align": lambda x, r: R.multi_scale_roi_align([x, x[..., ::2, ::2]], r, OUTPUT, PYRAMID, -1, True),
}


def test_onnx_export_runs_in_onnxruntime_as_in_roigen(tmp_path, gen):
    """Every translatable op in one exported graph (one export: each costs seconds)."""
    every = Call(lambda x, r: tuple(fn(x, r) for fn in TRANSLATED.values()))
    x = torch.randn(2, 6, 13, 11, generator=gen)
    # Any number of boxes, as a detector's proposals come.
    session = _export(every, (x, random_rois(2, 13, 11, 9, 0.5, gen)), tmp_path / "m.onnx",
                      dynamic_shapes=({}, {0: torch.export.Dim.AUTO}))
    # Other boxes than the export's, and another count: nothing about them was baked in.
    x, rois = torch.randn(2, 6, 13, 11, generator=gen), random_rois(2, 13, 11, 7, 0.5, gen)
    for name, got in zip(TRANSLATED, _run(session, (x, rois)), strict=True):
        torch.testing.assert_close(got, TRANSLATED[name](x, rois), rtol=1e-5, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("name, fn", [
    ("ps_roi_align", lambda x, r: R.ps_roi_align(x, r, 2, 0.5)),
    ("ps_roi_pool", lambda x, r: R.ps_roi_pool(x, r, 2, 0.5)),
    ("roi_align", lambda x, r: R.roi_align(x, r, 2, 0.5, 2, mode="max")),
    ("spp", lambda x, r: R.spp(x, (2, 1), mode="avg")),
], ids=["ps_roi_align", "ps_roi_pool", "roi_align-max", "spp-avg"])
def test_onnx_export_of_an_untranslatable_op_names_it(name, fn, tmp_path, gen):
    x, rois = torch.randn(2, 8, 9, 9, generator=gen), random_rois(2, 9, 9, 4, 0.5, gen)
    with pytest.raises(Exception, match=f"roigen.{name} cannot be exported to ONNX"):
        _export(Call(fn), (x, rois), tmp_path / "m.onnx")


@pytest.mark.slow
def test_maskrcnn_roi_heads_export_to_onnxruntime(tmp_path, gen):
    """torchvision's Mask R-CNN box and mask heads on roigen's MultiScaleRoIAlign, exported
    and run in ONNX Runtime, against the same heads in eager PyTorch."""
    model = heads.Heads()
    features, proposals = heads.inputs(gen)
    with torch.no_grad():
        expected = model(features, proposals)
    session = _export(model, (features, proposals), tmp_path / "heads.onnx")
    for got, want in zip(_run(session, (features, proposals)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# The oracle, evaluated under the same autocast: torchvision's roi_align (which has
# an autocast kernel); for the rest, the op on the float32 map (torchvision's CPU
# roi_pool, ps_roi_* have none: they refuse bfloat16 maps with float32 boxes).
# The specs are the test matrix's float32 ones (OUTPUT, SCALE).
HALF_OPS = {
    "roi_align": (lambda x, r: R.roi_align(x, r, OUTPUT, SCALE, -1, True),
                  lambda x, r: torchvision.ops.roi_align(x, r, OUTPUT, SCALE, -1, True)),
    "roi_pool": (lambda x, r: R.roi_pool(x, r, OUTPUT, SCALE),
                 lambda x, r: torchvision.ops.roi_pool(x.float(), r, OUTPUT, SCALE)),
    "ps_roi_align": (lambda x, r: R.ps_roi_align(x, r, OUTPUT, SCALE, 2),
                     lambda x, r: torchvision.ops.ps_roi_align(x.float(), r, OUTPUT, SCALE, 2)),
    "ps_roi_pool": (lambda x, r: R.ps_roi_pool(x, r, OUTPUT, SCALE),
                    lambda x, r: torchvision.ops.ps_roi_pool(x.float(), r, OUTPUT, SCALE)),
    # No torchvision form: the op on the float32 map, in the map's dtype.
    "roi_warp": (lambda x, r: R.roi_warp(x, r, OUTPUT, SCALE, -1),
                 lambda x, r: R.roi_warp(x.float(), r, OUTPUT, SCALE, -1)),
    "roi_spp": (lambda x, r: R.roi_spp(x, r, (3, 1), SCALE), lambda x, r: R.roi_spp(x.float(), r, (3, 1), SCALE)),
    "spp": (lambda x, r: R.spp(x, (3, 1)), lambda x, r: R.spp(x.float(), (3, 1))),
    "multi_scale_roi_align": (
        lambda x, r: R.multi_scale_roi_align([x, x[..., ::2, ::2]], r, OUTPUT, PYRAMID, -1, True),
        lambda x, r: R.multi_scale_roi_align([x.float(), x.float()[..., ::2, ::2]], r, OUTPUT, PYRAMID, -1, True)),
}


@pytest.mark.parametrize("name", HALF_OPS)
def test_autocast_runs_half_maps_with_float32_boxes_as_torchvision(name, gen):
    ours, theirs = HALF_OPS[name]
    x = torch.randn(2, 24, 10, 12, generator=gen).to(torch.bfloat16).requires_grad_()  # 24: C_out * 3 * 4
    rois = random_rois(2, 10, 12, 7, 0.5, gen)  # float32, as a model's proposals are
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ours(x, rois)
        want = theirs(x, rois)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want.to(torch.bfloat16))
    (grad,) = torch.autograd.grad(got.float().sum(), x)
    assert grad.dtype == torch.bfloat16 and grad.abs().sum() > 0
    if name != "spp":  # outside autocast, maps and boxes must share a dtype, as in torchvision
        with pytest.raises(TypeError, match="dtype"):
            ours(x, rois)


def _every_op(t, boxes):
    """Every op, at the test matrix's specs (OUTPUT, SCALE; t has 24 = 2 * 3 * 4 channels)."""
    per_image = [boxes[:3, 1:], boxes[3:, 1:]]  # the list form: image i gets its tensor's boxes
    return (R.roi_align(t, boxes, OUTPUT, SCALE, -1, True).sum() + R.roi_pool(t, per_image, OUTPUT, SCALE).sum()
            + R.roi_warp(t, boxes, OUTPUT, SCALE, -1).sum() + R.ps_roi_align(t, boxes, OUTPUT, SCALE, 2).sum()
            + R.ps_roi_pool(t, boxes, OUTPUT, SCALE).sum() + R.roi_spp(t, boxes, (3, 1), SCALE).sum()
            + R.spp(t, (3, 1)).sum() + R.multi_scale_roi_align([t, t[..., ::2, ::2]], boxes, OUTPUT, PYRAMID, -1,
                                                               True).sum())


def test_fx_keeps_each_op_one_leaf_call(gen):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = R.MultiScaleRoIAlign(["a", "b"], OUTPUT, -1, aligned=True)

        def forward(self, t, boxes):
            pyramid = self.pool({"a": t, "b": t[..., ::2, ::2]}, [boxes[:2, 1:], boxes[2:, 1:]], [(20, 24)] * 2)
            return _every_op(t, boxes) + pyramid.sum()

    traced = torch.fx.symbolic_trace(Model())
    called = {getattr(n.target, "__name__", n.target) for n in traced.graph.nodes if n.op == "call_function"}
    assert {"roi_align", "roi_pool", "roi_warp", "ps_roi_align", "ps_roi_pool", "roi_spp", "spp",
            "multi_scale_roi_align", "_pool_pyramid"} <= called
    t = torch.randn(2, 24, 10, 12, generator=gen)
    boxes = random_rois(2, 10, 12, 6, 0.5, gen)
    torch.testing.assert_close(traced(t, boxes), Model()(t, boxes))


def test_torch_export_runs_every_op(gen):
    t = torch.randn(2, 24, 10, 12, generator=gen)
    boxes = random_rois(2, 10, 12, 6, 0.5, gen)
    program = torch.export.export(Call(_every_op), (t, boxes))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {f"roigen.{name}.default" for name in ("roi_align", "roi_pool", "roi_warp", "ps_roi_align",
                                                 "ps_roi_pool", "roi_spp", "spp", "multi_scale_roi_align")} <= targets
    t, boxes = torch.randn(2, 24, 10, 12, generator=gen), random_rois(2, 10, 12, 6, 0.5, gen)
    torch.testing.assert_close(program.module()(t, boxes), _every_op(t, boxes))
