"""Every op against its float64 reference and torchvision, forward and backward."""

from __future__ import annotations

import pytest
import torch
from boxes import KINDS, random_rois
from cases import ALL, WITH_ORACLE

N, C, H, W = 2, 20, 11, 13  # C is not a multiple of any vector width: padding is exercised
SCALE = 0.5
OUTPUT = (3, 4)


def _problem(gen, dtype, kinds=KINDS, count=18, channels=C):
    x = torch.randn(N, channels, H, W, generator=gen, dtype=torch.float64).to(dtype)
    rois = random_rois(N, H, W, count, SCALE, gen, kinds=kinds, dtype=dtype)
    return x, rois


def _forward_backward(fn, x, rois, grad):
    x = x.detach().clone().requires_grad_()
    out = fn(x, rois, OUTPUT, SCALE)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("case", ALL, ids=str)
def test_matches_reference_float64(case, gen):
    x, rois = _problem(gen, torch.float64, kinds=KINDS + ("inverted",), count=21)
    grad = torch.randn(len(rois), C, *OUTPUT, generator=gen, dtype=torch.float64)
    out, gx = _forward_backward(case.roigen, x, rois, grad)
    ref, gref = _forward_backward(case.reference, x, rois, grad)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx, gref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", WITH_ORACLE, ids=str)
def test_matches_torchvision_float32(case, gen):
    x, rois = _problem(gen, torch.float32)
    grad = torch.randn(len(rois), C, *OUTPUT, generator=gen)
    out, gx = _forward_backward(case.roigen, x, rois, grad)
    ref, gref = _forward_backward(case.oracle, x, rois, grad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ALL, ids=str)
def test_gradcheck(case, gen):
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(2, 5, 6, 6, 1.0, gen, kinds=("inside", "partial", "tiny"), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: case.roigen(t, rois, 2, 1.0), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", WITH_ORACLE[:2] + [c for c in ALL if c.name == "roi_pool"], ids=str)
def test_half_types_match_float32(case, dtype, gen):
    x, rois = _problem(gen, dtype)
    grad = torch.randn(len(rois), C, *OUTPUT, generator=gen).to(dtype)
    out, gx = _forward_backward(case.roigen, x, rois, grad)
    assert out.dtype == dtype and gx.dtype == dtype
    # The same (rounded) values in float32: only the last rounding may differ.
    ref, gref = _forward_backward(case.roigen, x.float(), rois.float(), grad.float())
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.float(), gref, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ALL[:1] + [c for c in ALL if c.name == "roi_pool"], ids=str)
@pytest.mark.parametrize("channels", [16, 20])
def test_layouts_and_strides_agree(case, channels, gen):
    x, rois = _problem(gen, torch.float32, channels=channels)
    grad = torch.randn(len(rois), channels, *OUTPUT, generator=gen)
    out, gx = _forward_backward(case.roigen, x, rois, grad)
    wide = torch.randn(N, channels, H, 2 * W, generator=gen)
    wide[..., ::2] = x
    variants = {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "strided": wide[..., ::2],
        "permuted": x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
    }
    for name, variant in variants.items():
        o, g = _forward_backward(case.roigen, variant, rois, grad)
        torch.testing.assert_close(o, out, rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(g, gx, rtol=1e-6, atol=1e-6, msg=name)
    _, g = _forward_backward(case.roigen, variants["channels_last"], rois, grad)
    assert g.is_contiguous(memory_format=torch.channels_last), "grad follows the input's memory format"


@pytest.mark.parametrize("case", [ALL[0], [c for c in ALL if c.name == "roi_pool"][0]], ids=str)
def test_no_boxes(case, gen):
    x = torch.randn(N, C, H, W, generator=gen, requires_grad=True)
    out = case.roigen(x, torch.zeros(0, 5), OUTPUT, SCALE)
    assert out.shape == (0, C, *OUTPUT)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("case", [ALL[0], [c for c in ALL if c.name == "roi_pool"][0]], ids=str)
def test_list_of_boxes_equals_tensor_form(case, gen):
    x, rois = _problem(gen, torch.float32)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(N)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(N)])
    torch.testing.assert_close(case.roigen(x, per_image, OUTPUT, SCALE), case.roigen(x, ordered, OUTPUT, SCALE))


@pytest.mark.parametrize("case", [ALL[0], [c for c in ALL if c.name == "roi_pool"][0]], ids=str)
def test_inputs_are_not_modified(case, gen):
    x, rois = _problem(gen, torch.float32)
    x_before, rois_before = x.clone(), rois.clone()
    x.requires_grad_()
    case.roigen(x, rois, OUTPUT, SCALE).sum().backward()
    assert torch.equal(x.detach(), x_before) and torch.equal(rois, rois_before)


def test_many_images_and_large_channel_counts(gen):
    """More images than threads, more channel blocks than one: the task split is exercised."""
    from cases import OpCase

    case = OpCase("roi_align", (("sampling_ratio", 2), ("aligned", True), ("mode", "avg")))
    x = torch.randn(5, 70, 9, 10, generator=gen)
    rois = random_rois(5, 9, 10, 40, 1.0, gen)
    torch.testing.assert_close(case.roigen(x, rois, 7, 1.0), case.oracle(x, rois, 7, 1.0), rtol=1e-5, atol=1e-5)
