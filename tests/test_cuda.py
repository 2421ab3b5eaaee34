"""CUDA: every op's kernels compile with nvcc without spills (runs in CI, which has nvcc and
no GPU): every compile case for sm_80 here, and every op for sm_90 in test_package.py's CUDA
package (one module, its ptxas report checked kernel by kernel); where a GPU is present,
the kernels run and match the reference."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import roigen.ops
from roigen import cache
from roigen.build import ensure_built

from boxes import KINDS, random_rois
from cases import ALL, ONE_PER_OP, forward_backward, problem

ARCHS = ("cuda-sm80", "cuda-sm90")
# One case per kernel shape: every op, both modes, adaptive sampling (the
# data-dependent loops), both SPP level sets.
# (clockwise only flips the angle's sign, so one direction stands for both.)
COMPILE_CASES = [c for c in ALL if c.kwargs.get("sampling_ratio", -1) == -1 and c.kwargs.get("aligned", True)
                 and not c.kwargs.get("clockwise", False)]
ELF_MAGIC, EM_CUDA = b"\x7fELF", 190

SAMPLED_OPS = ("roi_align", "roi_warp", "ps_roi_align", "roi_align_rotated", "prroi_pool", "deform_roi_pool")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@needs_nvcc
@pytest.mark.parametrize("target", ARCHS[:1])  # sm_90: test_package.py's CUDA package
@pytest.mark.parametrize("case", COMPILE_CASES, ids=str)
def test_compiles_without_spills(case, target):
    name, _ = ensure_built(case.spec(), target)
    arch = target.replace("cuda-sm", "sm_")
    cubin = cache.path(name, ".cubin").read_bytes()
    assert cubin[:4] == ELF_MAGIC and int.from_bytes(cubin[18:20], "little") == EM_CUDA
    assert "__global__" in cache.path(name, ".cu").read_text()
    resources = json.loads(cache.path(name, ".ptxas.json").read_text())
    kernels = {"forward_kernel", "backward_kernel"}
    if case.name != "spp":  # the SPP backward gathers: no atomic variant
        kernels.add("backward_atomic_kernel")
    # Sample grids that depend on the box (adaptive sampling, PrRoIPool's cells): the grid limit's kernel.
    if case.name in SAMPLED_OPS and getattr(case.spec(), "sampling_ratio", 0) <= 0:
        kernels.add("grid_size_kernel")
    if case.spec().box_gradient:
        kernels.add("backward_boxes_kernel")
    assert set(resources) == kernels
    for kernel, used in resources.items():
        assert used["arch"] == arch
        assert used["spill_stores"] == 0 and used["spill_loads"] == 0, (kernel, used)
        assert 0 < used["registers"] <= 255


def test_ptxas_report_parsing():
    from roigen.backends.cuda import parse_report

    text = """ptxas info    : Compiling entry function 'forward_kernel' for 'sm_90'
ptxas info    : Function properties for forward_kernel
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]"""
    assert parse_report(text) == {"forward_kernel": {"arch": "sm_90", "registers": 40, "spill_stores": 4,
                                                     "spill_loads": 4, "stack": 8, "shared": 1024}}


def _problem(case, gen, dtype=torch.float32):
    return problem(case, gen, dtype, shape=(2, 13, 15), channels=case.channels(40), kinds=KINDS + ("inverted",),
                   count=24)


def _cuda(t):
    return None if t is None else t.cuda()


@needs_gpu
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("case", ALL, ids=str)
def test_runs_on_gpu_and_matches_reference(case, deterministic, gen):
    x, rois = _problem(case, gen, torch.float64)
    fn = lambda t, r: case.roigen(t, r, deterministic=deterministic)  # noqa: E731
    out, gx = forward_backward(fn, x.cuda(), _cuda(rois))
    assert out.is_cuda and gx.is_cuda
    ref, gref = forward_backward(case.reference, x, rois)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gx.cpu(), gref, rtol=1e-9, atol=1e-9)
    cpu, gcpu = forward_backward(lambda t, r: case.roigen(t, r), x.float(), None if rois is None else rois.float())
    gpu, ggpu = forward_backward(fn, x.float().cuda(), _cuda(None if rois is None else rois.float()))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ggpu.cpu(), gcpu, rtol=1e-4, atol=1e-4)


@needs_gpu
@pytest.mark.parametrize("case", ONE_PER_OP, ids=str)
def test_deterministic_backward_is_bitwise_repeatable(case, gen):
    x, rois = _problem(case, gen)
    x, rois = x.cuda(), _cuda(rois)
    torch.use_deterministic_algorithms(True)
    try:
        _, first = forward_backward(case.roigen, x, rois)
        _, second = forward_backward(case.roigen, x, rois)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(first, second)


@needs_gpu
def test_runs_on_the_current_stream(gen):
    x = torch.randn(2, 64, 20, 20, generator=gen).cuda()
    rois = random_rois(2, 20, 20, 200, 1.0, gen).cuda()
    expected = roigen.ops.roi_align(x, rois, 7, 1.0, 2)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = roigen.ops.roi_align(x, rois, 7, 1.0, 2)
    stream.synchronize()
    torch.testing.assert_close(out, expected)


@needs_gpu
def test_cpu_tensors_with_a_cuda_target_are_refused():
    with pytest.raises(ValueError, match="runs CUDA tensors"):
        roigen.ops.roi_align(torch.randn(1, 2, 4, 4), torch.tensor([[0, 0, 0, 2, 2.0]]), 2, target="cuda-sm90")
