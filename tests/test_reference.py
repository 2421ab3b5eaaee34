"""The float64 references agree with torchvision, so they can stand in for it."""

from __future__ import annotations

import pytest
import torch
import torchvision

from roigen import reference

from boxes import random_rois


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_reference_matches_torchvision(sampling_ratio, aligned, gen):
    x = torch.randn(2, 4, 11, 13, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(2, 11, 13, 24, 0.5, gen, dtype=torch.float64)
    ours = reference.roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    theirs = torchvision.ops.roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.3, 1 / 16])
def test_roi_pool_reference_matches_torchvision(spatial_scale, gen):
    x = torch.randn(2, 4, 11, 13, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = random_rois(2, 11, 13, 24, spatial_scale, gen, dtype=torch.float64)
    ours = reference.roi_pool(x, rois, (3, 4), spatial_scale)
    theirs = torchvision.ops.roi_pool(x, rois, (3, 4), spatial_scale)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    grad = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])


def test_c_round_is_half_away_from_zero():
    assert [reference.c_round(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4999)] == [1, 2, 3, -1, -3, 2]


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_new_references_match_their_oracles(sampling_ratio, gen):
    import torch.nn.functional as F

    x = torch.randn(2, 24, 11, 13, generator=gen, dtype=torch.float64)
    rois = random_rois(2, 11, 13, 24, 0.5, gen, kinds=("inside", "partial", "outside", "tiny", "huge"),
                       dtype=torch.float64)
    tv = torchvision.ops
    torch.testing.assert_close(reference.ps_roi_align(x, rois, (3, 4), 0.5, sampling_ratio),
                               tv.ps_roi_align(x, rois, (3, 4), 0.5, sampling_ratio))
    torch.testing.assert_close(reference.ps_roi_pool(x, rois, (3, 4), 0.5), tv.ps_roi_pool(x, rois, (3, 4), 0.5))
    snapped = rois.clone()
    v = rois[:, 1:] * 0.5
    snapped[:, 1:] = torch.sign(v) * torch.floor(v.abs() + 0.5)
    torch.testing.assert_close(reference.roi_warp(x, rois, (3, 4), 0.5, sampling_ratio),
                               tv.roi_align(x, snapped, (3, 4), 1.0, sampling_ratio, False))
    torch.testing.assert_close(reference.roi_spp(x, rois, (4, 2, 1), 0.5),
                               torch.cat([tv.roi_pool(x, rois, n, 0.5).flatten(1) for n in (4, 2, 1)], 1))
    for mode, pool in (("max", F.adaptive_max_pool2d), ("avg", F.adaptive_avg_pool2d)):
        for shape in ((11, 13), (3, 2)):
            small = x[..., : shape[0], : shape[1]]
            torch.testing.assert_close(reference.spp(small, (4, 2, 1), mode),
                                       torch.cat([pool(small, n).flatten(1) for n in (4, 2, 1)], 1))
