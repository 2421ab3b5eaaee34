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


# Values a box row may hold, the ones each check is about among them.
ROW_VALUES = st.sampled_from([0.0, 1.0, 2.0, 2.5, -1.0, -0.5, 1e30, float("nan"), float("inf"), float("-inf")])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(ROW_VALUES, min_size=6, max_size=6), min_size=1, max_size=4),
       batch=st.integers(1, 3), dtype=st.sampled_from([torch.float32, torch.float64]),
       nonnegative=st.sampled_from([(), (3, 4)]))
def test_native_row_checks_agree_with_the_torch_checks(rows, batch, dtype, nonnegative):
    """roigen.native's one-pass check of box rows passes exactly the rows the ops' torch checks
    pass (it stands in for them on CPU float rows)."""
    from roigen import native

    rois = torch.tensor(rows, dtype=dtype)
    index = rois[:, 0]
    valid = bool(torch.isfinite(rois).all() and (index == index.trunc()).all() and (index >= 0).all()
                 and (index < batch).all() and all(bool((rois[:, c] >= 0).all()) for c in nonnegative))
    assert native.rows_ok(rois, batch, nonnegative) == valid
    strided = torch.stack([rois, rois], 2).flatten(1)[:, ::2]
    assert not native.rows_ok(strided, batch, nonnegative)  # not contiguous: left to torch
