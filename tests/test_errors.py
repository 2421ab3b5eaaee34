"""Bad input gets a clear error naming the argument (ROI_OPS.md's conventions)."""

from __future__ import annotations

import pytest
import torch

import roigen.ops as R


@pytest.fixture
def x():
    return torch.randn(2, 3, 8, 9)


@pytest.fixture
def rois():
    return torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 3.0, 7.0]])


OPS = [
    lambda x, b, **kw: R.roi_align(x, b, kw.pop("output_size", 2), **kw),
    lambda x, b, **kw: R.roi_pool(x, b, kw.pop("output_size", 2), **kw),
]


@pytest.mark.parametrize("op", OPS, ids=["roi_align", "roi_pool"])
@pytest.mark.parametrize("boxes, error, words", [
    (torch.tensor([[1.0, 1.0, 6.0, 5.0]]), ValueError, "boxes"),                   # Nx4 where Kx5 is expected
    (torch.tensor([[2, 1.0, 1.0, 6.0, 5.0]]), ValueError, "batch index"),          # index == N
    (torch.tensor([[-1, 1.0, 1.0, 6.0, 5.0]]), ValueError, "batch index"),
    (torch.tensor([[0.5, 1.0, 1.0, 6.0, 5.0]]), ValueError, "batch index"),        # not integral
    (torch.tensor([[0, float("nan"), 1.0, 6.0, 5.0]]), ValueError, "boxes"),
    (torch.tensor([[0, 1.0, float("inf"), 6.0, 5.0]]), ValueError, "boxes"),
    (torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]], dtype=torch.float64), TypeError, "dtype"),
    ([torch.tensor([[1.0, 1.0, 6.0]])], ValueError, "boxes[0]"),
    ("boxes", TypeError, "boxes"),
])
def test_bad_boxes(op, x, boxes, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        op(x, boxes)


@pytest.mark.parametrize("op", OPS, ids=["roi_align", "roi_pool"])
@pytest.mark.parametrize("kwargs, error, words", [
    ({"output_size": 0}, ValueError, "output_size"),
    ({"output_size": (2, -1)}, ValueError, "output_size"),
    ({"output_size": 2.5}, TypeError, "output_size"),
    ({"spatial_scale": 0.0}, ValueError, "spatial_scale"),
    ({"spatial_scale": -0.25}, ValueError, "spatial_scale"),
    ({"spatial_scale": float("nan")}, ValueError, "spatial_scale"),
])
def test_bad_parameters(op, x, rois, kwargs, error, words):
    with pytest.raises(error, match=words):
        op(x, rois, **kwargs)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"sampling_ratio": 1.5}, TypeError, "sampling_ratio"),
    ({"mode": "median"}, ValueError, "mode"),
    ({"aligned": "yes"}, TypeError, "aligned"),
])
def test_bad_roi_align_parameters(x, rois, kwargs, error, words):
    with pytest.raises(error, match=words):
        R.roi_align(x, rois, 2, **kwargs)


@pytest.mark.parametrize("op", OPS, ids=["roi_align", "roi_pool"])
@pytest.mark.parametrize("make_input, error, words", [
    (lambda: torch.randn(3, 8, 9), ValueError, "input"),
    (lambda: torch.randint(0, 5, (2, 3, 8, 9)), TypeError, "input dtype"),
    (lambda: torch.randn(2, 3, 0, 9), ValueError, "input"),
    (lambda: [[1.0]], TypeError, "input"),
])
def test_bad_input(op, rois, make_input, error, words):
    with pytest.raises(error, match=words):
        op(make_input(), rois)


def test_boxes_on_another_device(x, rois):
    with pytest.raises(ValueError, match="boxes are on meta"):
        R.roi_align(x, rois.to("meta"), 2)


def test_direct_op_call_checks_values(x):
    """torch.ops.roigen.* skips the Python wrapper; it must still refuse out-of-range indices."""
    bad = torch.tensor([[7, 1.0, 1.0, 6.0, 5.0]])
    with pytest.raises(ValueError, match="batch index"):
        torch.ops.roigen.roi_align(x, bad, 1.0, 2, 2, -1, False, "avg")


def test_absurd_adaptive_box_is_refused(x):
    huge = torch.tensor([[0, 0.0, 0.0, 1e6, 1e6]])
    with pytest.raises(ValueError, match="sampling_ratio > 0"):
        R.roi_align(x, huge, 7, sampling_ratio=0)
    assert R.roi_align(x, huge, 7, sampling_ratio=2).shape == (1, 3, 7, 7)


def test_position_sensitive_needs_channels_divisible_by_bins():
    with pytest.raises(ValueError, match="multiple of output_size"):
        R.ps_roi_align(torch.randn(1, 10, 8, 9), torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]]), 3)
    with pytest.raises(ValueError, match="multiple of output_size"):
        R.ps_roi_pool(torch.randn(1, 10, 8, 9), torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]]), 3)


@pytest.mark.parametrize("levels, error", [((), ValueError), ((4, 0), ValueError), (4, TypeError),
                                           ((2.5,), TypeError)])
def test_bad_levels(x, rois, levels, error):
    with pytest.raises(error, match="levels"):
        R.spp(x, levels)
    with pytest.raises(error, match="levels"):
        R.roi_spp(x, rois, levels)


def test_bad_spp_mode(x):
    with pytest.raises(ValueError, match="mode"):
        R.spp(x, mode="median")


@pytest.mark.parametrize("op", [R.roi_warp, R.ps_roi_align, R.ps_roi_pool])
def test_new_ops_refuse_bad_boxes_and_sizes(op):
    x = torch.randn(2, 12, 8, 9)
    with pytest.raises(ValueError, match="boxes"):
        op(x, torch.tensor([[1.0, 1.0, 6.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="batch index"):
        op(x, torch.tensor([[3, 1.0, 1.0, 6.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        op(x, torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]]), 0)
    with pytest.raises(ValueError, match="spatial_scale"):
        op(x, torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]]), 2, spatial_scale=-1.0)


def test_multi_scale_bad_arguments():
    f = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    b = torch.tensor([[0, 1.0, 1.0, 30.0, 30.0]])
    with pytest.raises(ValueError, match="scales"):
        R.multi_scale_roi_align(f, b, 2, [0.25])
    with pytest.raises(ValueError, match="scales"):
        R.multi_scale_roi_align(f, b, 2, [0.25, 0.0])
    with pytest.raises(TypeError, match="features"):
        R.multi_scale_roi_align(f[0], b, 2, [0.25])
    with pytest.raises(ValueError, match="features"):
        R.multi_scale_roi_align([f[0], torch.randn(1, 5, 8, 8)], b, 2, [0.25, 0.125])
    with pytest.raises(ValueError, match="batch index"):
        R.multi_scale_roi_align(f, torch.tensor([[1, 1.0, 1.0, 30.0, 30.0]]), 2, [0.25, 0.125])


def test_backward_refuses_a_missing_argmax(x, rois):
    """A forward run without keep_aux saves no argmax; backward must refuse, not read past it."""
    out, aux = torch.ops.roigen.roi_pool(x, rois, 1.0, 2, 2, False)
    assert aux.numel() == 0
    with pytest.raises(ValueError, match="keep_aux"):
        torch.ops.roigen.roi_pool_backward(torch.ones_like(out), rois, aux, *x.shape, False, 1.0, 2, 2,
                                           "auto", False)
    with pytest.raises(ValueError, match="grad has shape"):
        torch.ops.roigen.roi_align_backward(torch.ones(1, 3, 2, 2), rois, aux, *x.shape, False, 1.0, 2, 2, -1,
                                            False, "avg", "auto", False)


def test_inference_skips_the_argmax_but_training_keeps_it(x, rois):
    with torch.no_grad():
        _, aux = torch.ops.roigen.roi_pool(x, rois, 1.0, 2, 2, False)
    assert aux.numel() == 0
    _, aux = torch.ops.roigen.roi_pool(x.requires_grad_(), rois, 1.0, 2, 2)
    assert aux.numel() == rois.shape[0] * x.shape[1] * 4
