"""The ops no CPU peer has, against their peers' published test vectors and ROI_OPS.md's identities.

detectron2 and mmcv build roi_align_rotated, prroi_pool and deform_roi_pool from
C++/CUDA sources (mmcv's prroi_pool and deform_roi_pool are CUDA-only), so the
numbers in their test files stand in for them: tests/layers/test_roi_align_rotated.py
(detectron2), tests/test_ops/test_roi_align_rotated.py, test_prroi_pool.py and
test_deform_roi_pool.py (mmcv); and mmcv's offset gradient, written out from its kernel.
Every vector runs on the CPU and on Vulkan.
"""

from __future__ import annotations

import math

import pytest
import torch

import roigen.ops as R

from devices import require_vulkan

TARGETS = ["auto", "vulkan"]


@pytest.fixture(params=TARGETS)
def target(request):
    if request.param == "vulkan":
        require_vulkan()
    return request.param


def _dtype(target):
    return torch.float32 if target == "vulkan" else torch.float64


# mmcv tests/test_ops/test_roi_align_rotated.py: (input, rois), (output, input gradient of sum)
# for roi_align_rotated(x, rois, (2, 2), 1.0, 2, True): angles in radians.
MMCV_ROTATED = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0.5, 0.5, 1., 1., 0]],
     [[[[1.0, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2.], [3., 4.]]]], [[0., 0.5, 0.5, 1., 1., math.pi / 2]],
     [[[[1.5, 1], [1.75, 1.25]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0.5, 0.5, 1., 1., 0]],
     [[[[1.0, 1.25], [1.5, 1.75]], [[4.0, 3.75], [3.5, 3.25]]]],
     [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
     [[0., 1.5, 1.5, 3., 3., 0]],
     [[[[1.9375, 4.75], [7.5625, 10.375]]]],
     [[[[0.47265625, 0.42968750, 0.42968750, 0.04296875], [0.42968750, 0.39062500, 0.39062500, 0.03906250],
        [0.42968750, 0.39062500, 0.39062500, 0.03906250], [0.04296875, 0.03906250, 0.03906250, 0.00390625]]]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]],
     [[0., 1.5, 1.5, 3., 3., math.pi / 2]],
     [[[[7.5625, 1.9375], [10.375, 4.75]]]],
     [[[[0.47265625, 0.42968750, 0.42968750, 0.04296875], [0.42968750, 0.39062500, 0.39062500, 0.03906250],
        [0.42968750, 0.39062500, 0.39062500, 0.03906250], [0.04296875, 0.03906250, 0.03906250, 0.00390625]]]]),
]


@pytest.mark.parametrize("vector", range(len(MMCV_ROTATED)))
def test_roi_align_rotated_mmcv_vectors(vector, target):
    x, rois, out, grad = (torch.tensor(v, dtype=_dtype(target)) for v in MMCV_ROTATED[vector])
    x.requires_grad_()
    y = R.roi_align_rotated(x, rois, (2, 2), 1.0, 2, True, angle_unit="rad", target=target)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(y.detach(), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, grad, atol=1e-5, rtol=1e-5)


def _rot90(img, num):
    """detectron2's test helper: rotate an (H, W) image by num * 90 degrees."""
    for _ in range(num % 4):
        img = img.transpose(0, 1).flip(0)
    return img


def _rotated_box(box, angle):
    return [(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, box[2] - box[0], box[3] - box[1], angle]


@pytest.mark.parametrize("quarter", range(4))
def test_roi_align_rotated_detectron2_0_90_180_270(quarter, target):
    img = torch.arange(25, dtype=_dtype(target)).reshape(1, 1, 5, 5)
    rois = torch.tensor([[0.0, *_rotated_box([1, 1, 3, 3], 90 * quarter)]], dtype=img.dtype)
    out = R.roi_align_rotated(img, rois, (4, 4), 1.0, 0, target=target)[0, 0]
    expected = torch.tensor([[4.5, 5.0, 5.5, 6.0], [7.0, 7.5, 8.0, 8.5], [9.5, 10.0, 10.5, 11.0],
                             [12.0, 12.5, 13.0, 13.5]], dtype=img.dtype)
    # A box rotated 90 degrees counter-clockwise gives the output rotated clockwise.
    torch.testing.assert_close(out, _rot90(expected, -quarter), atol=1e-5, rtol=1e-5)


def test_roi_align_rotated_detectron2_empty_box(target, gen):
    img = torch.rand(1, 1, 5, 5, generator=gen, dtype=_dtype(target))
    out = R.roi_align_rotated(img, torch.tensor([[0, 2, 3, 0, 0, 0]], dtype=img.dtype), (7, 7), 1.0, 0,
                              target=target)
    assert (out == 0).all()


def test_roi_align_rotated_detectron2_gradcheck(gen):
    x = torch.rand(1, 1, 10, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 4.5, 4.5, 9, 9, 0], [0, 2, 7, 4, 4, 0], [0, 7, 7, 4, 4, 0]], dtype=torch.float64)
    module = R.RoIAlignRotated((5, 5), 0.5, 1)
    assert torch.autograd.gradcheck(lambda t: module(t, rois), (x,))
    assert torch.autograd.gradcheck(lambda t: module(t, rois), (x.transpose(2, 3),))


def test_roi_align_rotated_detectron2_gradient_equals_roi_align(target, gen):
    """detectron2's GPU test: the input gradient of axis-aligned rotated boxes is RoIAlign's."""
    x = torch.rand(1, 1, 10, 10, generator=gen, dtype=_dtype(target))
    rotated = torch.tensor([[0, 4.5, 4.5, 9, 9, 0], [0, 2, 7, 4, 4, 0], [0, 7, 7, 4, 4, 0]], dtype=x.dtype)
    plain = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9]], dtype=x.dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    R.roi_align_rotated(a, rotated, (5, 5), 1.0, 2, target=target).sum().backward()
    R.roi_align(b, plain, (5, 5), 1.0, 2, aligned=True, target=target).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_rotated_at_angle_0_is_roi_align_aligned(sampling_ratio, target, gen):
    x = torch.randn(2, 5, 12, 14, generator=gen, dtype=_dtype(target))
    k = 20
    x1, y1 = torch.rand(k, generator=gen) * 20, torch.rand(k, generator=gen) * 18
    w, h = torch.rand(k, generator=gen) * 10 + 0.3, torch.rand(k, generator=gen) * 10 + 0.3
    batch = torch.randint(0, 2, (k,), generator=gen).float()
    plain = torch.stack([batch, x1, y1, x1 + w, y1 + h], 1).to(x.dtype)
    rotated = torch.stack([batch, x1 + w / 2, y1 + h / 2, w, h, torch.zeros(k)], 1).to(x.dtype)
    ours = R.roi_align_rotated(x, rotated, (3, 4), 0.5, sampling_ratio, target=target)
    theirs = R.roi_align(x, plain, (3, 4), 0.5, sampling_ratio, aligned=True, target=target)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("quarter", [-2, -1, 1, 2, 3])
def test_roi_align_rotated_square_box_at_quarter_turns_is_rot90(quarter, target, gen):
    x = torch.randn(1, 3, 16, 16, generator=gen, dtype=_dtype(target))
    centre, side = (7.3, 8.1), 6.4
    boxes = [[0, *centre, side, side, 90.0 * i] for i in (0, quarter)]
    out = R.roi_align_rotated(x, torch.tensor(boxes, dtype=x.dtype), 4, 1.0, 2, target=target)
    torch.testing.assert_close(out[1], torch.rot90(out[0], -quarter, (1, 2)), atol=1e-5, rtol=1e-5)


def test_roi_align_rotated_mmcv_clockwise_negates_the_angle(gen):
    x = torch.randn(1, 4, 9, 11, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 4.2, 5.1, 4.0, 3.0, 0.7]], dtype=torch.float64)
    flipped = rois.clone()
    flipped[:, 5] = -flipped[:, 5]
    torch.testing.assert_close(R.roi_align_rotated(x, rois, 3, 1.0, 2, angle_unit="rad", clockwise=True),
                               R.roi_align_rotated(x, flipped, 3, 1.0, 2, angle_unit="rad"))


def test_roi_align_rotated_refuses_negative_sizes_when_aligned(gen):
    x = torch.randn(1, 2, 6, 6, generator=gen)
    rois = torch.tensor([[0, 3.0, 3.0, -2.0, 2.0, 10.0]])
    with pytest.raises(ValueError, match=r"boxes\[:, 3\].*>= 0"):
        R.roi_align_rotated(x, rois, 2)
    # Unaligned, mmcv clamps malformed boxes to 1x1, as any w' < 1.
    unit = rois.clone()
    unit[0, 3] = 1.0
    torch.testing.assert_close(R.roi_align_rotated(x, rois, 2, aligned=False),
                               R.roi_align_rotated(x, unit, 2, aligned=False))


# mmcv tests/test_ops/test_prroi_pool.py: (input, rois), (output, input gradient, box gradient)
# of prroi_pool(x, rois, (2, 2), 1.0) with the sum's gradient.
MMCV_PRROI = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1.75, 2.25], [2.75, 3.25]]]], [[[[1., 1.], [1., 1.]]]], [[0., 2., 4., 2., 4.]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1.75, 2.25], [2.75, 3.25]], [[3.25, 2.75], [2.25, 1.75]]]],
     [[[[1., 1.], [1., 1.]], [[1., 1.], [1., 1.]]]], [[0., 0., 0., 0., 0.]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]],
     [[[[3.75, 6.91666651], [10.08333302, 13.25]]]],
     [[[[0.11111111, 0.22222224, 0.22222222, 0.11111111], [0.22222224, 0.444444448, 0.44444448, 0.22222224],
        [0.22222224, 0.44444448, 0.44444448, 0.22222224], [0.11111111, 0.22222224, 0.22222224, 0.11111111]]]],
     [[0.0, 3.33333302, 6.66666603, 3.33333349, 6.66666698]]),
]


@pytest.mark.parametrize("vector", range(len(MMCV_PRROI)))
def test_prroi_pool_mmcv_vectors(vector, target):
    x, rois, out, grad, box_grad = (torch.tensor(v, dtype=_dtype(target)) for v in MMCV_PRROI[vector])
    x.requires_grad_()
    rois.requires_grad_()
    y = R.prroi_pool(x, rois, (2, 2), 1.0, target=target)
    y.backward(torch.ones_like(y))
    # mmcv's numbers are float32 printouts (0.444444448, 3.33333302): compare to 1e-6.
    torch.testing.assert_close(y.detach(), out, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x.grad, grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rois.grad, box_grad, atol=2e-6, rtol=1e-6)


def test_prroi_pool_at_half_scale_on_a_14_pixel_box_is_a_2x2_average_pool(target, gen):
    x = torch.randn(2, 6, 9, 10, generator=gen, dtype=_dtype(target))
    rois = torch.tensor([[0, 0, 0, 14, 14], [1, 0, 0, 14, 14]], dtype=x.dtype)
    out = R.prroi_pool(x, rois, 7, 0.5, target=target)
    expected = torch.nn.functional.avg_pool2d(x, 2, stride=1)[..., :7, :7]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_prroi_pool_bins_of_no_area_give_zero(target, gen):
    x = torch.randn(1, 3, 6, 6, generator=gen, dtype=_dtype(target), requires_grad=True)
    rois = torch.tensor([[0, 2, 2, 2, 5], [0, 4, 4, 1, 1]], dtype=x.dtype)  # zero width; inverted
    out = R.prroi_pool(x, rois, 2, 1.0, target=target)
    out.sum().backward()
    assert (out == 0).all() and (x.grad == 0).all()


# mmcv tests/test_ops/test_deform_roi_pool.py: (input, rois), (output, input gradient of sum) of
# DeformRoIPoolPack((2, 2), C, spatial_scale=1.0, sampling_ratio=2) at initialisation (offsets 0).
MMCV_DEFORM = [
    ([[[[1., 2.], [3., 4.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1, 1.25], [1.5, 1.75]]]], [[[[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2.], [3., 4.]], [[4., 3.], [2., 1.]]]], [[0., 0., 0., 1., 1.]],
     [[[[1., 1.25], [1.5, 1.75]], [[4, 3.75], [3.5, 3.25]]]],
     [[[[3.0625, 0.4375], [0.4375, 0.0625]], [[3.0625, 0.4375], [0.4375, 0.0625]]]]),
    ([[[[1., 2., 5., 6.], [3., 4., 7., 8.], [9., 10., 13., 14.], [11., 12., 15., 16.]]]], [[0., 0., 0., 3., 3.]],
     [[[[1.9375, 4.75], [7.5625, 10.375]]]],
     [[[[0.47265625, 0.4296875, 0.4296875, 0.04296875], [0.4296875, 0.390625, 0.390625, 0.0390625],
        [0.4296875, 0.390625, 0.390625, 0.0390625], [0.04296875, 0.0390625, 0.0390625, 0.00390625]]]]),
]


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("vector", range(len(MMCV_DEFORM)))
def test_deform_roi_pool_pack_mmcv_vectors(vector, modulated):
    x, rois, out, grad = (torch.tensor(v, dtype=torch.float32) for v in MMCV_DEFORM[vector])
    x.requires_grad_()
    pack = (R.ModulatedDeformRoIPoolPack if modulated else R.DeformRoIPoolPack)(
        (2, 2), x.shape[1], spatial_scale=1.0, sampling_ratio=2)
    y = pack(x, rois)
    y.backward(torch.ones_like(y))
    mask = 0.5 if modulated else 1.0  # the mask head's sigmoid of 0 at initialisation
    torch.testing.assert_close(y.detach(), out * mask, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x.grad, grad * mask, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_roi_pool_pack_gradcheck(modulated, gen):
    """mmcv's gradcheck of the packs, in float64 (the offset and mask heads trained too)."""
    torch.manual_seed(0)
    pack = (R.ModulatedDeformRoIPoolPack if modulated else R.DeformRoIPoolPack)(
        (2, 2), 3, deform_fc_channels=8, spatial_scale=0.5, sampling_ratio=2).double()
    for layer in pack.modules():  # offsets and masks away from their zero start
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.3)
    x = torch.randn(2, 3, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.3, 3.1, 11.7, 9.2], [1, 0.4, 1.3, 7.9, 12.6]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: pack(t, rois), (x,), eps=1e-6, atol=1e-6)


def test_deform_roi_pool_with_zero_or_no_offset_is_roi_align_aligned(target, gen):
    x = torch.randn(2, 5, 9, 10, generator=gen, dtype=_dtype(target))
    rois = torch.tensor([[0, 1.3, 2.1, 15.2, 11.7], [1, -3.0, 4.4, 8.8, 30.0], [1, 6.0, 6.0, 6.0, 6.0]],
                        dtype=x.dtype)
    expected = R.roi_align(x, rois, (3, 4), 0.5, 0, aligned=True, target=target)
    zero = torch.zeros(3, 2, 3, 4, dtype=x.dtype)
    torch.testing.assert_close(R.deform_roi_pool(x, rois, zero, (3, 4), 0.5, target=target), expected)
    torch.testing.assert_close(R.deform_roi_pool(x, rois, None, (3, 4), 0.5, target=target), expected)


def _mmcv_offset_gradient(x, rois, offset, pooled, scale, ratio, gamma, grad):
    """mmcv's deform_roi_pool backward for the offsets (deform_roi_pool_cuda_kernel.cuh), written
    out in float64 for samples inside [0, W-1) x [0, H-1), where ROI_OPS.md says it is the derivative."""
    ph_, pw_ = pooled
    out = torch.zeros_like(offset)
    for k, (b, *box) in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
        rw, rh = x2 - x1, y2 - y1
        for ph in range(ph_):
            for pw in range(pw_):
                sx = x1 + gamma * rw * float(offset[k, 0, ph, pw])
                sy = y1 + gamma * rh * float(offset[k, 1, ph, pw])
                for iy in range(ratio):
                    y = sy + ph * rh / ph_ + (iy + 0.5) * rh / ph_ / ratio
                    for ix in range(ratio):
                        xx = sx + pw * rw / pw_ + (ix + 0.5) * rw / pw_ / ratio
                        yl, xl = math.floor(y), math.floor(xx)
                        assert 0 <= yl < x.shape[2] - 1 and 0 <= xl < x.shape[3] - 1, "keep samples inside"
                        f = x[int(b), :, yl:yl + 2, xl:xl + 2]
                        g = grad[k, :, ph, pw] / ratio ** 2
                        ogx = (f[:, 1, 1] * (y - yl) + f[:, 0, 1] * (yl + 1 - y) + f[:, 1, 0] * (yl - y)
                               + f[:, 0, 0] * (y - yl - 1))
                        ogy = (f[:, 1, 1] * (xx - xl) + f[:, 1, 0] * (xl + 1 - xx) + f[:, 0, 1] * (xl - xx)
                               + f[:, 0, 0] * (xx - xl - 1))
                        out[k, 0, ph, pw] += gamma * rw * (g * ogx).sum()
                        out[k, 1, ph, pw] += gamma * rh * (g * ogy).sum()
    return out


def test_deform_roi_pool_offset_gradient_is_mmcvs_inside_the_map(target, gen):
    x = torch.randn(2, 4, 12, 13, generator=gen, dtype=_dtype(target))
    rois = torch.tensor([[0, 6.1, 5.3, 17.9, 15.2], [1, 8.4, 7.7, 19.1, 16.3]], dtype=x.dtype)
    offset = (torch.rand(2, 2, 3, 3, generator=gen, dtype=torch.float64) - 0.5).to(x.dtype).requires_grad_()
    grad = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    out = R.deform_roi_pool(x, rois, offset, 3, 0.5, 2, 0.1, target=target)
    (ours,) = torch.autograd.grad(out, offset, grad.to(out.dtype))
    mmcv = _mmcv_offset_gradient(x.double(), rois.double(), offset.detach().double(), (3, 3), 0.5, 2, 0.1, grad)
    tol = 1e-5 if target == "vulkan" else 1e-12
    torch.testing.assert_close(ours.double(), mmcv, atol=tol, rtol=tol)


@pytest.mark.parametrize("bad, error, words", [
    (lambda k: torch.zeros(k, 2, 3, 3), ValueError, "offset must be a Tensor"),
    (lambda k: torch.zeros(k, 2, 2, 2, 1), ValueError, "offset must be a Tensor"),
    (lambda k: torch.full((k, 2, 2, 2), float("nan")), ValueError, "offset holds NaN"),
    (lambda k: torch.full((k, 2, 2, 2), float("inf")), ValueError, "offset holds NaN"),
    (lambda k: torch.zeros(k, 2, 2, 2, dtype=torch.int64), TypeError, "offset must be a floating"),
    (lambda k: "offset", TypeError, "offset must be a Tensor"),
])
def test_deform_roi_pool_refuses_bad_offsets(bad, error, words):
    x = torch.randn(1, 3, 8, 9)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [0, 2.0, 2.0, 7.0, 7.0]])
    with pytest.raises(error, match=words):
        R.deform_roi_pool(x, rois, bad(2), 2)
    with pytest.raises(ValueError, match="gamma"):
        R.deform_roi_pool(x, rois, None, 2, gamma=float("nan"))
