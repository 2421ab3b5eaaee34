"""Bad input gets a clear error naming the argument (ROI_OPS.md's conventions)."""

from __future__ import annotations

import pytest
import torch

import roigen.ops as R
from roigen.ops import _adapter

from cases import BOXED_ONE_PER_OP


@pytest.fixture
def x():
    return torch.randn(2, 3, 8, 9)


@pytest.fixture
def rois():
    return torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 3.0, 7.0]])


def _call(case, input, boxes, **changes):
    """The case's public op, its arguments changed by `changes`."""
    params = case.op_params()
    return getattr(R, case.name)(input, *_adapter.box_arguments(case.spec_cls, boxes, params),
                                 **{**_adapter.arguments(case.spec_cls, params), **changes})


def _map(case):
    return torch.randn(2, case.channels(3), 8, 9)


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
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
def test_bad_boxes(case, boxes, error, words):
    extra = case.spec().row_columns - 5  # a rotated box's angle, deformable bins' offsets: 0
    if extra and isinstance(boxes, torch.Tensor) and boxes.shape[1] == 5:
        boxes = torch.cat([boxes, boxes.new_zeros(len(boxes), extra)], 1)
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        _call(case, _map(case), boxes)


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
@pytest.mark.parametrize("kwargs, error, words", [
    ({"output_size": 0}, ValueError, "output_size"),
    ({"output_size": (2, -1)}, ValueError, "output_size"),
    ({"output_size": 2.5}, TypeError, "output_size"),
    ({"spatial_scale": 0.0}, ValueError, "spatial_scale"),
    ({"spatial_scale": -0.25}, ValueError, "spatial_scale"),
    ({"spatial_scale": float("nan")}, ValueError, "spatial_scale"),
])
def test_bad_parameters(case, rois, kwargs, error, words):
    if not set(kwargs) <= set(_adapter.arguments(case.spec_cls, case.op_params())):
        pytest.skip(f"{case.name} takes no {sorted(kwargs)}")
    with pytest.raises(error, match=words):
        _call(case, _map(case), rois, **kwargs)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"sampling_ratio": 1.5}, TypeError, "sampling_ratio"),
    ({"mode": "median"}, ValueError, "mode"),
    ({"aligned": "yes"}, TypeError, "aligned"),
])
def test_bad_roi_align_parameters(x, rois, kwargs, error, words):
    with pytest.raises(error, match=words):
        R.roi_align(x, rois, 2, **kwargs)


@pytest.mark.parametrize("case", BOXED_ONE_PER_OP, ids=str)
@pytest.mark.parametrize("make_input, error, words", [
    (lambda: torch.randn(3, 8, 9), ValueError, "input"),
    (lambda: torch.randint(0, 5, (2, 3, 8, 9)), TypeError, "input dtype"),
    (lambda: torch.randn(2, 3, 0, 9), ValueError, "input"),
    (lambda: [[1.0]], TypeError, "input"),
])
def test_bad_input(case, rois, make_input, error, words):
    with pytest.raises(error, match=words):
        _call(case, make_input(), rois)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"aligned": 1}, TypeError, "aligned"),
    ({"output_size": 2.0}, TypeError, "output_size"),
])
def test_bad_parameters_equal_to_valid_ones_are_refused_after_them(x, rois, kwargs, error, words):
    """Each valid combination of parameters is validated once; 1 == True and 2.0 == 2 must
    not pass as the valid combination they equal."""
    R.roi_align(x, rois, 2, aligned=True)
    with pytest.raises(error, match=words):
        R.roi_align(x, rois, **{"output_size": 2, "aligned": True, **kwargs})


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


def test_multi_scale_op_refuses_forged_levels_and_pyramids():
    """The op itself (past the wrapper, which computes the levels) checks what its kernels rely
    on: a box with no level would leave its output rows unwritten."""
    f = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)]
    rois = torch.tensor([[0, 1.0, 1.0, 30.0, 30.0], [1, 2.0, 2.0, 9.0, 9.0]])
    op = torch.ops.roigen.multi_scale_roi_align
    for levels in (torch.tensor([0, 2]), torch.tensor([-1, 0]), torch.tensor([0]), torch.tensor([0.0, 1.0])):
        with pytest.raises(ValueError, match="levels"):
            op(f, rois, levels, [2, 2], [0.25, 0.125], 2, False)
    with pytest.raises(ValueError, match="features"):
        op([f[0], torch.randn(1, 4, 8, 8)], rois, torch.tensor([0, 1]), [2, 2], [0.25, 0.125], 2, False)


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


def test_box_gradient_op_refuses_forged_arguments_and_survives_a_forged_argmax(x, rois):
    """`<op>_backward_boxes` is public: a missing argmax or a gradient of the wrong shape is
    refused; an argmax of wrong sample numbers adds nothing (the kernels check each one)."""
    out, aux = torch.ops.roigen.roi_align(x, rois, 1.0, 2, 2, -1, False, "max")
    grad = torch.ones_like(out)
    args = (1.0, 2, 2, -1, False, "max", "auto")
    with pytest.raises(ValueError, match="aux"):
        torch.ops.roigen.roi_align_backward_boxes(grad, x, rois, out, aux[:0], *args)
    with pytest.raises(ValueError, match="grad"):
        torch.ops.roigen.roi_align_backward_boxes(grad[:, :1], x, rois, out, aux, *args)
    forged = torch.full_like(aux, 1 << 30)
    forged[::2] = -7
    got = torch.ops.roigen.roi_align_backward_boxes(grad, x, rois, out, forged, *args)
    assert torch.equal(got, torch.zeros_like(rois))


def test_inference_skips_the_argmax_but_training_keeps_it(x, rois):
    with torch.no_grad():
        _, aux = torch.ops.roigen.roi_pool(x, rois, 1.0, 2, 2, False)
    assert aux.numel() == 0
    _, aux = torch.ops.roigen.roi_pool(x.requires_grad_(), rois, 1.0, 2, 2)
    assert aux.numel() == rois.shape[0] * x.shape[1] * 4


# Edge cases of the conventions (each names what it checks).

def test_zero_channels_give_empty_results_and_gradients():
    from cases import ONE_PER_OP

    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 3.0, 7.0]])
    for case in ONE_PER_OP:
        x = torch.zeros(2, 0, 8, 9, requires_grad=True)
        boxes = torch.cat([rois, rois.new_zeros(len(rois), case.spec().row_columns - 5)], 1)
        out = case.roigen(x, boxes)
        assert out.shape == case.spec().output_shape(x.shape, len(rois)) and out.numel() == 0, case
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert grad.shape == x.shape, case


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_multi_scale_refuses_non_finite_boxes(bad):
    f = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    with pytest.raises(ValueError, match="NaN or infinite"):
        R.multi_scale_roi_align(f, torch.tensor([[0, 1.0, bad, 30.0, 30.0]]), 2, [0.25, 0.125])


@pytest.mark.parametrize("kwargs, words", [
    ({"spatial_scale": 1e39}, r"spatial_scale must be a number in \(0, 3.403e\+38\]"),
    ({"sampling_ratio": 2**63}, r"sampling_ratio must lie in \[-2\*\*31, 16384\]"),
    ({"sampling_ratio": -(2**40)}, "sampling_ratio must lie in"),
    ({"output_size": 2**20}, r"output_size must lie in \[1, 16384\]"),
])
def test_out_of_range_parameters_are_named_with_their_range(x, rois, kwargs, words):
    output_size = kwargs.pop("output_size", 2)
    with pytest.raises(ValueError, match=words):
        R.roi_align(x, rois, output_size, **kwargs)


def test_spp_levels_have_a_range(x):
    with pytest.raises(ValueError, match=r"levels must be .* ints in \[1, 16384\]"):
        R.spp(x, (2**20,))


def test_the_adaptive_sampling_limit_says_what_it_is():
    x = torch.randn(1, 2, 8, 9)
    huge = torch.tensor([[0, 0.0, 0.0, 1e6, 1e6]])
    with pytest.raises(ValueError, match=r"sampling_ratio <= 0 .* limit of 2048 for adaptive sampling"):
        R.roi_align(x, huge, 7, sampling_ratio=0)


def test_a_fixed_sampling_ratio_has_no_table_limit():
    """Table size is 2 * sampling_ratio * (PH + PW), known from the parameters: never refused."""
    from roigen import reference

    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    small = torch.tensor([[0, 1.0, 1.0, 4.0, 3.5]], dtype=torch.float64)
    torch.testing.assert_close(R.roi_align(x, small, 2, sampling_ratio=1000),
                               reference.roi_align(x, small, 2, sampling_ratio=1000))
    wide = R.roi_align(x, small, (1, 5000), sampling_ratio=2)
    torch.testing.assert_close(wide, reference.roi_align(x, small, (1, 5000), sampling_ratio=2))


def test_roi_pool_of_a_huge_box_takes_each_bins_maximum():
    """Box (0, 0, 1e19, 1e19): bin (0, 0) spans the whole map (torchvision returns x[0, 0])."""
    x = torch.randn(1, 3, 5, 6)
    out = R.roi_pool(x, torch.tensor([[0, 0.0, 0.0, 1e19, 1e19]]), 2)
    torch.testing.assert_close(out[0, :, 0, 0], x[0].amax((1, 2)))
    assert (out[0, :, 0, 1] == 0).all() and (out[0, :, 1, :] == 0).all()  # bins past the map are empty


def test_a_request_that_cannot_fit_is_a_memory_error_before_any_work():
    from roigen.limits import available_bytes

    x = torch.randn(1, 64, 8, 8)
    boxes = torch.tensor([[0, 0.0, 0.0, 7.0, 7.0]]).repeat(64, 1)
    need = 64 * 64 * 2000 * 2000 * 4
    assert need > available_bytes()
    with pytest.raises(MemoryError, match="GiB"):
        R.roi_pool(x, boxes, 2000)
    # and the process goes on: a new spec loads and runs
    assert R.roi_pool(x, boxes[:1], 3).shape == (1, 64, 3, 3)


def test_large_grids_use_bounded_scratch_and_match_the_oracles():
    """roi_pool and spp past the tile size (scratch per task is bounded, not lanes x all bins)."""
    import torch.nn.functional as F
    import torchvision

    x = torch.randn(1, 2, 4, 5, requires_grad=True)
    box = torch.tensor([[0, 0.0, 0.0, 4.0, 3.0]])
    out = R.roi_pool(x, box, 2000)
    torch.testing.assert_close(out, torchvision.ops.roi_pool(x, box, 2000))
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    (expected,) = torch.autograd.grad(torchvision.ops.roi_pool(x, box, 2000), x, torch.ones_like(out))
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(R.spp(x, (2000,)), F.adaptive_max_pool2d(x, 2000).flatten(1))
