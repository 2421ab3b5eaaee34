"""Hostile input never crashes the process or touches memory outside the tensors.

Each test runs its cases in a subprocess, so that a crash (SIGSEGV on a guard
page, SIGBUS, abort) fails that test instead of ending the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cases import ONE_PER_OP

HERE = Path(__file__).parent


def _python(*args, code=None, timeout=900):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, *(["-c", code] if code else []), *args]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=HERE)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-3000:]}"
    return run.stdout


def _vulkan() -> bool:
    from roigen.backends import wgpu as vulkan

    try:
        vulkan.device()
    except vulkan.VulkanUnavailable:
        if os.environ.get("CI"):
            raise
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("op", [c.name for c in ONE_PER_OP])
def test_adversarial_boxes_on_guarded_maps(op):
    counts = json.loads(_python(str(HERE / "hostile_runner.py"), op, *(["vulkan"] if _vulkan() else []))
                        .strip().splitlines()[-1])
    print(op, counts)  # the figures the note reports (pytest -s)
    assert counts["runtime"] > 0 and counts["public"] > 0
    takes_boxes = op != "spp"
    assert counts["non_finite_refused"] == (2 * 4 * 6 if takes_boxes else 0)


FORGED = textwrap.dedent("""
    import torch
    import roigen.ops as R
    ops = torch.ops.roigen
    results = []

    def attempt(name, fn):
        try:
            out = fn()
        except (ValueError, TypeError, RuntimeError) as err:
            results.append((name, type(err).__name__))
            return
        assert torch.isfinite(out).all(), name
        results.append((name, "ran"))

    torch.manual_seed(0)
    x = torch.randn(2, 4, 16, 16)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0], [1, 3.0, 0.0, 15.0, 12.0]])
    for name, params in [("roi_pool", (1.0, 2, 2)), ("roi_align", (1.0, 2, 2, 2, False, "max")),
                         ("roi_spp", (1.0, [4, 2, 1])), ("roi_warp", (1.0, 2, 2, 2, "max"))]:
        fwd, bwd = getattr(ops, name), getattr(ops, name + "_backward")
        out, aux = fwd(x, rois, *params)
        g = torch.ones_like(out)
        for label, forged in [("huge", torch.full_like(aux, 1 << 30)), ("negative", torch.full_like(aux, -7)),
                              ("max", torch.full_like(aux, 2**31 - 1)),
                              ("random", torch.randint(-2**31, 2**31 - 1, aux.shape, dtype=torch.int32))]:
            attempt(f"{name} aux {label}", lambda: bwd(g, rois, forged, 2, 4, 16, 16, False, *params, "auto", False))
        # A smaller map than the forward's: the argmax points past it.
        attempt(f"{name} 1x1 map", lambda: bwd(g, rois, aux, 2, 4, 1, 1, False, *params, "auto", False))
        bad_rois = rois.clone(); bad_rois[0, 1] = float("nan")
        attempt(f"{name} nan rois", lambda: bwd(g, bad_rois, aux, 2, 4, 16, 16, False, *params, "auto", False))
        far = rois.clone(); far[:, 0] = 1e30
        attempt(f"{name} batch index", lambda: bwd(g, far, aux, 2, 4, 16, 16, False, *params, "auto", False))
        attempt(f"{name} fewer images", lambda: bwd(g, rois, aux, 1, 4, 16, 16, False, *params, "auto", False))
        attempt(f"{name} negative shape", lambda: bwd(g, rois, aux, 2, -4, 16, 16, False, *params, "auto", False))
        attempt(f"{name} aux dtype", lambda: bwd(g, rois, aux.float(), 2, 4, 16, 16, False, *params, "auto", False))
        attempt(f"{name} short aux", lambda: bwd(g, rois, aux[:3], 2, 4, 16, 16, False, *params, "auto", False))
    out, aux = ops.spp(x, [4, 2, 1], "max")
    attempt("spp aux huge", lambda: ops.spp_backward(torch.ones_like(out), torch.full_like(aux, 1 << 30),
                                                       2, 4, 16, 16, False, [4, 2, 1], "max", "auto", False))
    attempt("spp 1x1 map", lambda: ops.spp_backward(torch.ones_like(out), aux, 2, 4, 1, 1, False, [4, 2, 1],
                                                      "max", "auto", False))
    xp = torch.randn(2, 8, 1, 5)
    bad = torch.tensor([[1, float("nan"), 1.0, 3.0, 1.0]])
    attempt("ps_roi_align nan box", lambda: ops.ps_roi_align_backward(
        torch.ones(1, 2, 2, 2), bad, torch.empty(0, dtype=torch.int32), 2, 8, 1, 5, False, 1.0, 2, 2, 2,
        "auto", False))
    huge = torch.tensor([[1, 1e30, 1e30, 1e30, 1e30]])
    attempt("ps_roi_align huge box", lambda: R.ps_roi_align(xp, huge, 2, 1.0, 2))
    attempt("ps_roi_align huge box backward", lambda: ops.ps_roi_align_backward(
        torch.ones(1, 2, 2, 2), huge, torch.empty(0, dtype=torch.int32), 2, 8, 1, 5, False, 1.0, 2, 2, 2,
        "auto", False))
    print(results)
""")


def test_forged_backward_arguments_are_refused_or_bounded():
    results = dict(eval(_python(code=FORGED).strip().splitlines()[-1]))  # noqa: S307 - our own repr
    for name in ("roi_pool", "roi_align", "roi_spp", "roi_warp"):
        # Forged argmax values are bounded by the kernels (no crash, a finite gradient) ...
        for label in ("huge", "negative", "max", "random", "1x1 map"):
            assert results[f"{name} aux {label}" if label != "1x1 map" else f"{name} 1x1 map"] == "ran"
        # ... and arguments the kernels would trust are refused with a clear error.
        for label in ("nan rois", "batch index", "fewer images"):
            assert results[f"{name} {label}"] == "ValueError", (name, label, results)
        assert results[f"{name} negative shape"] == "ValueError"
        assert results[f"{name} aux dtype"] == "TypeError"
        assert results[f"{name} short aux"] == "ValueError"
    assert results["spp aux huge"] == results["spp 1x1 map"] == "ran"
    assert results["ps_roi_align nan box"] == "ValueError"
    assert results["ps_roi_align huge box"] == results["ps_roi_align huge box backward"] == "ran"


def test_forged_argmax_gradient_stays_in_the_map():
    """A forged argmax sends gradient nowhere outside the map (and a true one to its pixel)."""
    import torch

    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]])
    out, aux = torch.ops.roigen.roi_pool(x, rois, 1.0, 1, 1)
    forged = aux.clone()
    forged[0] = 36  # one past the last pixel
    grad = torch.ops.roigen.roi_pool_backward(torch.ones_like(out), rois, forged, 1, 2, 6, 6, False, 1.0, 1, 1,
                                              "auto", False)
    assert grad[0, 0].sum() == 0 and grad[0, 1].sum() == 1
    assert grad[0, 1].flatten()[int(aux[1])] == 1
