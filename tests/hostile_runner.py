"""Feeds one op adversarial boxes on guarded maps; run by test_hostile.py in a subprocess.

    python hostile_runner.py OP [vulkan]

For every map shape (1x1, 1xW, Hx1, HxW), side of the guard page and dtype
(float64 at scale 1, float32 at SCALE), it runs the op's forward and backward
on a batch of finite adversarial boxes (±1e30, ±1e19, ±3e38, 2**31, 2**63,
exactly on the edges, inverted, tiny, zero-size, random mixes), on the
guarded map itself through
the runtime (so reads past the map and writes past the gradient fault), and
through the public op against the float64 reference.  Non-finite boxes must
be refused.  Each sample table the align family builds must address pixels
of the map only.  With "vulkan", the finite boxes also run on the Vulkan
target and must agree with the CPU.  Prints one JSON line: the case counts.
"""

from __future__ import annotations

import json
import sys

import torch

from roigen.build import build
from roigen.specs import SPECS

from cases import ONE_PER_OP, OUTPUT, SCALE, OpCase
from guarded import guarded

EDGE_VALUES = [0.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0, 5.0, 6.0, 1e-30, -1e-30, 1e19, -1e19, 1e30, -1e30,
               3e38, -3e38, 2.0**31, -(2.0**31), 2.0**63, -(2.0**63), 2.0**24 + 1, 1e6, -1e6]
SHAPES = [(1, 1), (1, 5), (5, 1), (4, 7)]


def adversarial_rois(height, width, scale, gen, count=48) -> torch.Tensor:
    """(count, 5) finite rows, batch index in {0, 1}: structured edge cases, then random mixes."""
    wi, hi = width / scale, height / scale
    rows = [
        [0, 0, 0, wi, hi], [1, -1, -1, wi + 1, hi + 1], [0, wi, hi, wi, hi],  # the map, around it, its corner
        [0, wi - 1, hi - 1, wi, hi], [1, 3, 2, 1, 0], [0, 2, 2, 2, 2],  # last pixel, inverted, zero-size
        [0, 1, 1, 1 + 1e-6, 1 + 1e-6], [1, 0, 0, 1e19, 1e19], [0, -1e19, -1e19, 1e19, 1e19],  # tiny, huge
        [1, 1e30, 1e30, 1e30, 1e30], [0, -3e38, -3e38, 3e38, 3e38], [1, 2.0**63, 0, 2.0**63, hi],
    ]
    pool = torch.tensor(EDGE_VALUES + [wi, hi, wi - 1, hi - 1, wi + 1, hi + 1], dtype=torch.float64)
    while len(rows) < count:
        pick = pool[torch.randint(0, len(pool), (4,), generator=gen)].tolist()
        rows.append([len(rows) % 2] + pick)
    return torch.tensor(rows, dtype=torch.float64)


# Rotated boxes take the same edge values as centres and sizes (|size|: aligned boxes refuse
# negative ones), at edge angles.
ANGLES = [0.0, 90.0, -45.0, 1e-7, 180.0, 1e6, 1e30, -3e38]


# Deformable bins' offsets: within the box, far off it, and past any map.
OFFSETS = [0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 1e3, -1e3, 1e19, -1e19, 3e38, -3e38, 1e-30]


def adversarial_boxes(case, height, width, scale, gen) -> torch.Tensor:
    """adversarial_rois in the op's box format."""
    rows = adversarial_rois(height, width, scale, gen)
    if case.spec_cls.columns_per_bin:
        extra = case.spec().row_columns - 5
        pool = torch.tensor(OFFSETS, dtype=torch.float64)
        return torch.cat([rows, pool[torch.randint(0, len(pool), (len(rows), extra), generator=gen)]], 1)
    if case.spec_cls.box_columns == 5:
        return rows
    angles = torch.tensor(ANGLES, dtype=torch.float64)[torch.arange(len(rows)) % len(ANGLES)]
    return torch.cat([rows[:, :3], rows[:, 3:].abs(), angles[:, None]], 1)


def _runnable(kernels, rois, height, width, counts):
    """The rows the runtime runs, each row's sample tables checked to address pixels of the map
    only (a batch's tables are as wide as its widest row's; the rest of a row is never read).
    Every row runs where a fixed sampling_ratio bounds the grid; PrRoIPool's cells grow with
    the box, so it refuses absurd boxes, and says so."""
    if rois is None or not getattr(kernels, "_has_tables", False):
        return rois
    keep = []
    for i in range(len(rois)):
        try:
            itab, _ = kernels._tables(rois[i:i + 1], height, width)
        except ValueError as err:
            assert not hasattr(kernels.spec, "sampling_ratio") and "cells" in str(err), err
            counts["refused"] += 1
            continue
        assert int(itab.min()) >= 0 and int(itab.max()) < height * width, (rois[i], itab.min(), itab.max())
        keep.append(i)
    return rois[keep]


NON_FINITE = [[0, float("nan"), 0, 1, 1], [0, 0, float("inf"), 1, 1], [0, 0, 0, float("-inf"), 1],
              [0, 0, 0, 1, float("nan")], [float("nan"), 0, 0, 1, 1], [0, float("inf"), float("-inf"), 1, 1]]


def _spec(case: OpCase, dtype: str, layout: str, scale: float):
    fields = {f.name for f in SPECS[case.name].op_fields()}
    fixed = {"spatial_scale": scale, "pooled_height": OUTPUT[0], "pooled_width": OUTPUT[1]}
    return SPECS[case.name](**case.kwargs, **{k: v for k, v in fixed.items() if k in fields},
                            dtype=dtype, layout=layout)


def _runtime_round_trip(case, x, rois, scale, side, counts):
    """Forward on the guarded map and backward into a guarded gradient, through the runtime;
    returns the rows it ran."""
    dtype = str(x.dtype).removeprefix("torch.")
    kernels = build(_spec(case, dtype, "NCHW", scale))
    rois = _runnable(kernels, rois, x.shape[2], x.shape[3], counts)
    out, aux = kernels.forward(x, rois)
    assert torch.isfinite(out).all(), "non-finite output from finite input"
    grad_input = guarded(tuple(x.shape), x.dtype, side)
    kernels.backward(torch.ones_like(out), rois, aux, tuple(x.shape), grad_input=grad_input)
    assert torch.isfinite(grad_input).all()
    counts["runtime"] += 2 * (1 if rois is None else rois.shape[0])
    return rois


# Past this, |coordinate * scale| leaves the range where float32 holds every
# integer: bin edges are then rounded as floats (as torchvision's float bin size
# rounds them), while the reference computes them exactly.
EXACT = 2.0**24


def _forward_backward(fn, x, rois, scale):
    x = x.detach().clone().requires_grad_()
    out = fn(x, rois, scale=scale)
    if not out.requires_grad:  # the reference's output can be constant (every bin empty)
        return out, torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return out, grad


def _public_against_reference(case, x, rois, scale, counts):
    """The public op (checks, autograd) on every box: finite results, or a clear refusal;
    in float64, boxes within the exact range against the float64 reference."""
    try:
        ours, grad = _forward_backward(case.roigen, x, rois, scale)
    except ValueError as err:  # an adaptive grid too large to run is refused, and says so
        assert "sampling_ratio" in str(err), err
        counts["refused"] += 1
        return
    assert torch.isfinite(ours).all() and torch.isfinite(grad).all()
    counts["public"] += 2 * (1 if rois is None else rois.shape[0])
    if x.dtype != torch.float64:
        return
    if rois is not None:
        rois = rois[(rois[:, 1:].abs() * scale <= EXACT).all(1)]
    ours, grad = _forward_backward(case.roigen, x, rois, scale)
    ref, grad_ref = _forward_backward(case.reference, x, rois, scale)
    tol = case.float64_tolerance
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, grad_ref, rtol=tol, atol=tol)
    counts["against_reference"] += 2 * (1 if rois is None else rois.shape[0])


def main(op: str, vulkan: bool) -> None:
    case = next(c for c in ONE_PER_OP if c.name == op)
    # Adaptive grids on absurd boxes are refused; a fixed ratio runs every box.
    if "sampling_ratio" in case.kwargs:
        case = OpCase(case.name, tuple((k, 2 if k == "sampling_ratio" else v) for k, v in case.params))
    gen = torch.Generator().manual_seed(0)
    counts = {"runtime": 0, "public": 0, "against_reference": 0, "refused": 0, "non_finite_refused": 0,
              "vulkan": 0}
    channels = case.channels(3)
    # One scale per dtype, each a build: 1.0 (the scaling folded away) and SCALE between them.
    for dtype, scale in ((torch.float64, 1.0), (torch.float32, SCALE)):
        for height, width in SHAPES:
            for side in ("after", "before"):
                x = guarded((2, channels, height, width), dtype, side,
                            fill=torch.randn(2, channels, height, width, generator=gen, dtype=dtype))
                rois = adversarial_boxes(case, height, width, scale, gen).to(dtype) if case.takes_boxes else None
                rois = _runtime_round_trip(case, x, rois, scale, side, counts)
                _public_against_reference(case, x, rois, scale, counts)
                if case.takes_boxes and side == "after":
                    for row in NON_FINITE:
                        try:
                            box = torch.tensor([row + [0.0] * (case.spec().row_columns - 5)], dtype=dtype)
                            case.roigen(x, box, scale=scale)
                        except ValueError as err:
                            assert "NaN or infinite" in str(err), err
                            counts["non_finite_refused"] += 1
                        else:
                            raise AssertionError(f"non-finite box {row} accepted")
                if vulkan and dtype == torch.float32 and side == "after":
                    if case.spec_cls.box_columns == 6:
                        # sin and cos of a float32 angle past a turn differ by implementation
                        # (WGSL bounds their error on [-pi, pi] only): compare the rest.
                        rois = rois[rois[:, 5].abs() <= 360]
                    if case.name == "prroi_pool":
                        # A mean over a bin narrower than float32 can place (1e-6 pixels here) is
                        # noise on either target: compare bins of 1e-3 pixels and more, or none.
                        sides = (rois[:, 3:5] - rois[:, 1:3]) * scale / torch.tensor(OUTPUT[::-1])
                        rois = rois[((sides >= 1e-3) | (sides <= 0)).all(1)]
                    cpu = case.roigen(x, rois, scale=scale)
                    gpu = case.roigen(x, rois, target="vulkan", scale=scale)
                    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
                    counts["vulkan"] += 1 if rois is None else rois.shape[0]
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1], "vulkan" in sys.argv[2:])
