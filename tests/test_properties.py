"""Property test: roigen equals the float64 reference over shapes and parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import roigen.ops as R
from roigen import reference

from boxes import random_rois

shapes = st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 12), st.integers(1, 12))

# Each spec is a compile; the examples vary the data (shapes, boxes, values) over a
# few specs that between them take every sampling ratio -1..3, both alignments,
# square and oblong outputs and four scales.
ALIGN_SPECS = [((2, 3), 0.5, -1, True), ((1, 4), 1 / 16, 1, False), ((4, 1), 1.0, 3, True),
               ((3, 3), 0.25, 0, False), ((2, 2), 0.5, 2, True)]
POOL_SPECS = [((2, 3), 0.5), ((1, 4), 0.3), ((4, 4), 1 / 16), ((3, 1), 1.0)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, boxes=st.integers(0, 12), spec=st.sampled_from(ALIGN_SPECS), seed=st.integers(0, 2**31 - 1))
@pytest.mark.slow
def test_roi_align_matches_reference(shape, boxes, spec, seed):
    output, scale, sampling_ratio, aligned = spec
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    rois = random_rois(n, h, w, boxes, scale, gen, dtype=torch.float64)
    got = R.roi_align(x, rois, output, scale, sampling_ratio, aligned)
    torch.testing.assert_close(got, reference.roi_align(x, rois, output, scale, sampling_ratio, aligned),
                               rtol=1e-9, atol=1e-9)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, boxes=st.integers(0, 12), spec=st.sampled_from(POOL_SPECS), seed=st.integers(0, 2**31 - 1))
def test_roi_pool_matches_reference(shape, boxes, spec, seed):
    output, scale = spec
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    rois = random_rois(n, h, w, boxes, scale, gen, dtype=torch.float64)
    torch.testing.assert_close(R.roi_pool(x, rois, output, scale), reference.roi_pool(x, rois, output, scale))
