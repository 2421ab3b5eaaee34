"""Every op on a real Vulkan device (WGSL through wgpu), forward and backward, against the reference.

CI installs Mesa's CPU Vulkan driver (lavapipe), so these run there; on a
machine with no Vulkan device they skip, except under CI where that is a failure.
"""

from __future__ import annotations

import pytest
import torch

import roigen.ops
from roigen.backends import wgpu as vulkan

from boxes import KINDS, random_rois
from cases import ALL, BOX_GRADIENT, BOXED_ONE_PER_OP, ONE_PER_OP, forward_backward, forward_backward_boxes, problem
from devices import require_vulkan

N, H, W = 2, 9, 12


@pytest.fixture(scope="module", autouse=True)
def vulkan_device():
    require_vulkan()


def _problem(case, gen, kinds=KINDS + ("inverted",), count=14):
    return problem(case, gen, shape=(N, H, W), channels=case.channels(10), kinds=kinds, count=count)


@pytest.mark.parametrize("case", ALL, ids=str)
def test_matches_reference(case, gen):
    x, rois = _problem(case, gen)
    out, gx = forward_backward(lambda t, r: case.roigen(t, r, target="vulkan"), x, rois)
    ref, gref = forward_backward(case.reference, x.double(), None if rois is None else rois.double())
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    tol = case.float32_tolerance
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.double(), gref, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_backward_is_repeatable(case, gen):
    x, rois = _problem(case, gen, kinds=("inside", "partial", "huge"), count=30)
    fn = lambda t, r: case.roigen(t, r, target="vulkan")  # noqa: E731
    _, first = forward_backward(fn, x, rois)
    _, second = forward_backward(fn, x, rois)
    assert torch.equal(first, second)


@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_half_input_and_channels_last(case, gen):
    x, rois = _problem(case, gen)
    fn = lambda t, r: case.roigen(t, r, target="vulkan")  # noqa: E731
    out, gx = forward_backward(fn, x.to(torch.bfloat16), None if rois is None else rois.to(torch.bfloat16))
    assert out.dtype == gx.dtype == torch.bfloat16
    ref, _ = forward_backward(fn, x.to(torch.bfloat16).float(),
                               None if rois is None else rois.to(torch.bfloat16).float())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    out_nhwc, g_nhwc = forward_backward(fn, nhwc, rois)
    out_nchw, g_nchw = forward_backward(fn, x, rois)
    torch.testing.assert_close(out_nhwc, out_nchw)
    torch.testing.assert_close(g_nhwc, g_nchw)
    assert g_nhwc.is_contiguous(memory_format=torch.channels_last)


def test_many_workgroups(gen):
    # Over 65535 workgroups: the launcher folds the grid into z as TVM's web runtime does.
    x = torch.randn(1, 256, 8, 8, generator=gen)
    rois = random_rois(1, 8, 8, 1400, 1.0, gen, kinds=("inside", "partial"))
    out = roigen.ops.roi_pool(x, rois, 7, 1.0, target="vulkan")
    torch.testing.assert_close(out, roigen.ops.roi_pool(x, rois, 7, 1.0))


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
def test_no_boxes(case, gen):
    x, _ = _problem(case, gen)
    out = case.roigen(x, case.no_boxes(), target="vulkan")
    assert out.shape[0] == 0


def test_float64_is_refused():
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64.*vulkan"):
        roigen.ops.roi_align(x, torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float64), 2, target="vulkan")


def test_no_device_is_a_clear_error(monkeypatch):
    import wgpu

    monkeypatch.setattr(wgpu.gpu, "request_adapter_sync", lambda **kw: None)
    vulkan.device.cache_clear()
    try:
        with pytest.raises(vulkan.VulkanUnavailable, match="no Vulkan device"):
            vulkan.device()
    finally:
        monkeypatch.undo()
        vulkan.device.cache_clear()


@pytest.mark.parametrize(("target", "message"), [
    ("cuda-sm90", "runs CUDA tensors"),
    ("tpu", "unknown target 'tpu'"),
    (3, "target must be a target name"),
])
def test_bad_target_is_refused(target, message):
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises((ValueError, TypeError), match=message):
        roigen.ops.roi_align(x, torch.tensor([[0, 0, 0, 3, 3.0]]), 2, target=target)


@pytest.mark.parametrize("case", BOX_GRADIENT, ids=str)
def test_box_gradient_matches_reference(case, gen):
    x, rois = _problem(case, gen)
    out, gx, gb = forward_backward_boxes(lambda t, r: case.roigen(t, r, target="vulkan"), x, rois)
    ref, gxr, gbr = forward_backward_boxes(case.reference, x.double(), rois.double())
    tol = case.float32_tolerance
    torch.testing.assert_close(gb.double(), gbr, rtol=tol, atol=tol)
    again = forward_backward_boxes(lambda t, r: case.roigen(t, r, target="vulkan"), x, rois)[2]
    assert torch.equal(gb, again), "one workgroup per box: the same bits every run"
