"""Every op against its float64 reference and its oracle (torchvision), forward and backward."""

from __future__ import annotations

import pytest
import torch

import roigen.ops
from roigen.ops import _adapter

from boxes import KINDS, random_rois
from cases import (
    ALL,
    BOX_GRADIENT,
    BOXED_ONE_PER_OP,
    ONE_PER_OP,
    WITH_ORACLE,
    box_coordinates,
    forward_backward,
    forward_backward_boxes,
    problem,
)

N, H, W = 2, 11, 13


@pytest.mark.parametrize("case", ALL, ids=str)
def test_matches_reference_float64(case, gen):
    # Inverted boxes (x2 < x1) are defined by ROI_OPS.md; torchvision crashes on some.
    x, rois = problem(case, gen, torch.float64, kinds=KINDS + ("inverted",), count=21)
    out, gx = forward_backward(case.roigen, x, rois, 1)
    ref, gref = forward_backward(case.reference, x, rois, 1)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx, gref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", WITH_ORACLE, ids=str)
def test_matches_oracle_float32(case, gen):
    # torchvision's ps_roi_align divides by a zero sample count for zero-size boxes.
    kinds = tuple(k for k in KINDS if k != "zero") if case.name == "ps_roi_align" else KINDS
    x, rois = problem(case, gen, torch.float32, kinds=kinds)
    out, gx = forward_backward(case.roigen, x, rois, 1)
    ref, gref = forward_backward(case.oracle, x, rois, 1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if case.oracle_gradient:
        torch.testing.assert_close(gx, gref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ALL, ids=str)
def test_gradcheck(case, gen):
    c = case.channels(3) if case.spec_cls.packed else case.channels()
    x = torch.randn(2, c, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = case.boxes(2, 5, 6, 5, 1.0, gen, kinds=("inside", "partial", "tiny"), dtype=torch.float64) \
        if case.takes_boxes else None
    assert torch.autograd.gradcheck(lambda t: case.roigen(t, rois, scale=1.0), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_half_types_match_float32(case, dtype, gen):
    x, rois = problem(case, gen, dtype)
    out, gx = forward_backward(case.roigen, x, rois, 1)
    assert out.dtype == dtype and gx.dtype == dtype
    # The same (rounded) values in float32: only the last rounding may differ.
    ref, gref = forward_backward(case.roigen, x.float(), None if rois is None else rois.float(), 1)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.float(), gref, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
@pytest.mark.parametrize("channels", [16, 20])
def test_layouts_and_strides_agree(case, channels, gen):
    x, rois = problem(case, gen, torch.float32, channels=channels if case.spec_cls.packed else None)
    out, gx = forward_backward(case.roigen, x, rois, 1)
    wide = torch.randn(N, x.shape[1], H, 2 * W, generator=gen)
    wide[..., ::2] = x
    variants = {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "strided": wide[..., ::2],
        "permuted": x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
    }
    for name, variant in variants.items():
        o, g = forward_backward(case.roigen, variant, rois, 1)
        torch.testing.assert_close(o, out, rtol=1e-6, atol=1e-6, msg=name)
        torch.testing.assert_close(g, gx, rtol=1e-6, atol=1e-6, msg=name)
    _, g = forward_backward(case.roigen, variants["channels_last"], rois, 1)
    assert g.is_contiguous(memory_format=torch.channels_last), "grad follows the input's memory format"


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
def test_no_boxes(case, gen):
    x = torch.randn(N, case.channels(), H, W, generator=gen, requires_grad=True)
    out = case.roigen(x, case.no_boxes())
    assert out.shape[0] == 0 and out.shape == case.reference(x.detach(), case.no_boxes()).shape
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
def test_list_of_boxes_equals_tensor_form(case, gen):
    x, rois = problem(case, gen, torch.float32)
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(N)])
    # The boxes, and what follows them in the public function's arguments (deformable offsets).
    params = case.op_params()
    boxes, *rest = _adapter.box_arguments(case.spec_cls, ordered, params)
    per_image = [boxes[boxes[:, 0] == i, 1:] for i in range(N)]
    op, kwargs = getattr(roigen.ops, case.name), _adapter.arguments(case.spec_cls, params)
    torch.testing.assert_close(op(x, per_image, *rest, **kwargs), op(x, boxes, *rest, **kwargs))


@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_inputs_are_not_modified(case, gen):
    x, rois = problem(case, gen, torch.float32)
    x_before = x.clone()
    rois_before = None if rois is None else rois.clone()
    x.requires_grad_()
    case.roigen(x, rois).sum().backward()
    assert torch.equal(x.detach(), x_before)
    assert rois is None or torch.equal(rois, rois_before)


def test_many_images_and_large_channel_counts(gen):
    """More images than threads, more channel blocks than one: the task split is exercised."""
    from cases import OpCase

    case = OpCase("roi_align", (("sampling_ratio", 2), ("aligned", True), ("mode", "avg")))
    x = torch.randn(5, 70, 9, 10, generator=gen)
    rois = random_rois(5, 9, 10, 40, 1.0, gen)
    torch.testing.assert_close(case.roigen(x, rois, scale=1.0), case.reference(x, rois, scale=1.0).float(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 5, 3, 2), (1, 17, 2, 9)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_spp_on_maps_smaller_than_the_finest_level(shape, mode, gen):
    from cases import OpCase

    case = OpCase("spp", (("levels", (4, 2, 1)), ("mode", mode)))
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    out, gx = forward_backward(case.roigen, x, None, 2)
    ref, gref = forward_backward(case.oracle, x, None, 2)
    assert out.shape == (shape[0], shape[1] * 21)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, gref)


@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_backward_is_deterministic(case, gen):
    """Threads own disjoint slabs of the gradient: repeated runs agree bit for bit."""
    x, rois = problem(case, gen, torch.float32, count=40)
    grads = [forward_backward(case.roigen, x, rois, 3)[1] for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("case", ONE_PER_OP + BOX_GRADIENT, ids=str)
def test_small_calls_run_serially_with_the_same_result(case, gen, monkeypatch):
    """Kernels on tensors under llvm.SERIAL_BYTES run as one task on the calling thread; the
    same call split over the thread pool gives the same bits: output, input gradient and,
    for the ops that have it, box gradient."""
    from roigen.backends import llvm

    x, rois = problem(case, gen, torch.float32, count=40)
    run = forward_backward_boxes if case in BOX_GRADIENT else forward_backward
    results = {}
    for name, limit in (("parallel", 0), ("serial", 1 << 40)):
        monkeypatch.setattr(llvm, "SERIAL_BYTES", limit)
        results[name] = run(case.roigen, x, rois, 3)
    for parallel, serial in zip(results["parallel"], results["serial"]):
        assert torch.equal(parallel, serial)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_wide_nchw_maps_convert_through_block_transposes(op, gen):
    """Float32 maps at 16 lanes convert L pixels at a time through block transposes: rows of
    two whole chunks and a remainder (W = 37), two full channel blocks and a partial one
    (C = 40), against torchvision, forward and backward."""
    import torchvision

    x = torch.randn(2, 40, 19, 37, generator=gen, requires_grad=True)
    rois = random_rois(2, 19, 37, 9, 0.5, gen, kinds=KINDS)
    ours = getattr(roigen.ops, op)(x, rois, 5, 0.5, *((2, True) if op == "roi_align" else ()))
    theirs = getattr(torchvision.ops, op)(x, rois, 5, 0.5, *((2, True) if op == "roi_align" else ()))
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])


@pytest.mark.parametrize("case", BOX_GRADIENT, ids=str)
def test_box_gradient_matches_reference_and_gradcheck(case, gen):
    # The reference is differentiable in its boxes: autograd through the float64 integrals.
    x, rois = problem(case, gen, torch.float64, kinds=KINDS + ("inverted",), count=21)
    out, gx, gb = forward_backward_boxes(case.roigen, x, rois)
    ref, gxr, gbr = forward_backward_boxes(case.reference, x, rois)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx, gxr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gb, gbr, rtol=1e-8, atol=1e-8)
    # Random boxes lie off the integer grid lines, where the derivative is smooth.  (The
    # input's own gradcheck is test_gradcheck's: here only the box coordinates move.)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    index, coords = box_coordinates(case.boxes(2, 5, 6, 5, 1.0, gen, kinds=("inside", "partial", "tiny"),
                                               dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda c: case.roigen(x, torch.cat([index, c], 1), scale=1.0), (coords,),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 7), (6, 1), (1, 1)], ids=["one-row", "one-column", "one-pixel"])
@pytest.mark.parametrize("case", BOX_GRADIENT, ids=str)
def test_maps_with_a_one_pixel_axis(case, shape, gen):
    # A one-pixel axis reads its pixel as both corners; the CPU's per-sample tables keep the
    # second corner as a step from the first, 0 on such an axis (_align.corner_step).
    x, rois = problem(case, gen, torch.float64, shape=(1, *shape), count=12)
    out, gx, gb = forward_backward_boxes(case.roigen, x, rois)
    ref, gxr, gbr = forward_backward_boxes(case.reference, x, rois)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx, gxr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gb, gbr, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("case", BOX_GRADIENT[:1], ids=str)
def test_box_gradient_runs_only_for_boxes_that_require_it(case, gen):
    x, rois = problem(case, gen, torch.float32)
    ops = [f"roigen::{case.name}_backward{suffix}" for suffix in ("", "_boxes", "_with_boxes")]

    def ran(boxes, input_grad=True):
        t = x.detach().clone().requires_grad_(input_grad)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            case.roigen(t, boxes).sum().backward()
        names = {e.key for e in prof.key_averages()}
        return tuple(op in names for op in ops)

    # (map only, boxes only, both in one pass)
    assert ran(rois) == (True, False, False)
    assert ran(rois.clone().requires_grad_()) == (False, False, True)
    assert ran(rois.clone().requires_grad_(), input_grad=False) == (False, True, False)


@pytest.mark.parametrize("case", BOX_GRADIENT[:1], ids=str)
def test_box_gradient_is_deterministic_and_zero_for_the_batch_index(case, gen):
    x, rois = problem(case, gen, torch.float32, count=40)
    grads = []
    for _ in range(3):
        r = rois.clone().requires_grad_()
        case.roigen(x, r).sum().backward()
        grads.append(r.grad)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert (grads[0][:, 0] == 0).all()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_box_gradient_sums_every_channel_block(mode, channels_last, gen):
    """RoIAlign's box gradient is summed from per-(box, channel block) partial sums: 37
    channels are several full blocks and a partial one, in either memory format."""
    case = next(c for c in BOX_GRADIENT if c.name == "roi_align" and c.kwargs.get("mode") == mode)
    x, rois = problem(case, gen, torch.float64, channels=37, kinds=KINDS + ("inverted",), count=15)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    got = forward_backward_boxes(case.roigen, x, rois)
    want = forward_backward_boxes(case.reference, x.contiguous(), rois)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


def _grid_sample_roi_align(x, rois, output_size, scale, sampling_ratio, aligned, mode):
    """An independent oracle for RoIAlign inside the map, differentiable in its boxes: each
    bin's sub-samples read with torch's grid_sample (bilinear, zero padding,
    align_corners=False, which puts pixel centres at integer coordinates), then averaged
    or maxed.  The sample counts are held constant, as ROI_OPS.md's box gradient does."""
    import math

    import torch.nn.functional as F

    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    _, _, height, width = x.shape
    outs = []
    for row in rois:
        x1, y1, x2, y2 = row[1:] * scale - offset
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(float(rh.detach()) / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(float(rw.detach()) / pw)

        def fractions(pooled, grid):
            s = torch.arange(pooled * grid, dtype=x.dtype)
            return (s // grid + (s % grid + 0.5) / grid) / pooled

        ys, xs = y1 + fractions(ph, gh) * rh, x1 + fractions(pw, gw) * rw
        gy, gx = (2 * ys + 1) / height - 1, (2 * xs + 1) / width - 1
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None]
        samples = F.grid_sample(x[int(row[0])][None], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)[0]
        samples = samples.reshape(-1, ph, gh, pw, gw).permute(0, 1, 3, 2, 4).reshape(-1, ph, pw, gh * gw)
        outs.append(samples.mean(-1) if mode == "avg" else samples.max(-1).values)
    return torch.stack(outs)


@pytest.mark.parametrize(("mode", "aligned", "sampling_ratio"),
                         [("avg", True, -1), ("avg", False, 2), ("max", True, 2), ("max", False, -1)])
def test_roi_align_box_gradient_matches_grid_sample(mode, aligned, sampling_ratio, gen):
    """roi_align's gradients (input and boxes) against autograd through grid_sample, for boxes
    whose samples stay inside the map (where both read the same bilinear surface)."""
    import roigen.ops

    scale, size = 0.5, (3, 4)
    x = torch.randn(2, 5, 16, 17, generator=gen, dtype=torch.float64)
    count = 12
    start = torch.rand(count, 2, generator=gen, dtype=torch.float64) * 6 + 0.3  # feature-map units
    extent = torch.rand(count, 2, generator=gen, dtype=torch.float64) * 7 + (1.0 if aligned else 0.2)
    offset = 0.5 if aligned else 0.0
    corners = (torch.cat([start, start + extent], 1) + offset) / scale
    rois = torch.cat([torch.randint(0, 2, (count, 1), generator=gen).double(), corners], 1)

    def run(fn):
        return forward_backward_boxes(lambda t, r: fn(t, r, size, scale, sampling_ratio, aligned, mode), x, rois)

    got = run(lambda *args: roigen.ops.roi_align(*args[:-1], mode=args[-1]))
    want = run(_grid_sample_roi_align)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
