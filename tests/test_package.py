"""`roigen generate`: kernel packages that load with TVM's runtime alone, new targets, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from roigen import reference
from roigen.package import generate, parse_spec

from boxes import KINDS, random_rois
from devices import require_vulkan

# One worker runs this file, so the module's package fixture is built once.
pytestmark = pytest.mark.xdist_group("package")

SPECS = ["roi_align:output_size=3,spatial_scale=0.5,sampling_ratio=-1,aligned=true",
         "roi_pool:output_size=2,spatial_scale=0.5",
         "ps_roi_align:output_size=2,spatial_scale=0.5,sampling_ratio=2"]

# Runs in a fresh process: roigen cannot be imported and TVM cannot compile.
USE_PACKAGE = textwrap.dedent("""
    import sys
    sys.modules["roigen"] = None
    import tvm
    def refuse(*args, **kwargs):
        raise AssertionError("the package compiled something")
    tvm.compile = refuse
    sys.path.insert(0, sys.argv[1])
    import importlib, torch
    pkg = importlib.import_module(sys.argv[2])
    data = torch.load(sys.argv[3])
    target = sys.argv[5]
    results = {}
    for name, (x, rois, args, kwargs) in data.items():
        x = x.clone().requires_grad_()
        out = getattr(pkg, name)(x, rois, *args, **kwargs, target=target)
        out.backward(torch.ones_like(out))
        results[name] = (out.detach(), x.grad)
        assert hasattr(getattr(torch.ops, sys.argv[2]), name)
    torch.save(results, sys.argv[4])
""")


def _problems(gen, dtype=torch.float32):
    x = torch.randn(2, 8, 9, 11, generator=gen, dtype=torch.float64)
    rois = random_rois(2, 9, 11, 10, 0.5, gen, kinds=KINDS)
    return {"roi_align": (x, rois, (3, 0.5, -1, True), {}),
            "roi_pool": (x, rois, (2, 0.5), {}),
            "ps_roi_align": (x, rois, (2, 0.5, 2), {})}


def _run_package(tmp_path, package: Path, gen, target="auto"):
    problems = _problems(gen)
    inputs = tmp_path / "inputs.pt"
    torch.save({k: (x.float(), r.float(), a, kw) for k, (x, r, a, kw) in problems.items()}, inputs)
    results = tmp_path / "results.pt"
    run = subprocess.run([sys.executable, "-c", USE_PACKAGE, str(package.parent), package.name, str(inputs),
                          str(results), target], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(results)
    for name, (x, rois, args, kwargs) in problems.items():
        x = x.clone().requires_grad_()
        ref = getattr(reference, name)(x, rois, *args, **kwargs)
        ref.backward(torch.ones_like(ref))
        out, grad = got[name]
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad.double(), x.grad, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def host_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkgs") / "roi_kernels"
    generate("host", [], out, [parse_spec(s) for s in SPECS])
    return out


def test_host_package_runs_without_roigen_or_compiler(host_package, tmp_path, gen):
    _run_package(tmp_path, host_package, gen)


def test_manifest_lists_specs_signatures_and_hashes(host_package):
    manifest = json.loads((host_package / "manifest.json").read_text())
    assert manifest["package"] == "roi_kernels" and manifest["tvm"] and manifest["target"]["runtime"] == "llvm"
    assert {e["op"] for e in manifest["specs"]} == {"roi_align", "roi_pool", "ps_roi_align"}
    forward = manifest["specs"][0]["kernels"]["forward"]
    assert forward and all("name" in p for p in forward)
    assert "tuning_records" in manifest
    assert "kernels.so" in manifest["files"] and "sources/kernels.s" in manifest["files"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((host_package / rel).read_bytes()).hexdigest() == digest, rel
    assert "k0_forward" in (host_package / "sources" / "kernels.s").read_text()  # readable assembly


def test_damaged_library_is_refused(host_package, tmp_path, gen):
    damaged = tmp_path / "roi_kernels"
    shutil.copytree(host_package, damaged)
    lib = damaged / "kernels.so"
    lib.write_bytes(lib.read_bytes()[:-16])
    problems = tmp_path / "in.pt"
    torch.save({"roi_pool": (torch.randn(1, 8, 5, 5), torch.tensor([[0, 0, 0, 4, 4.0]]), (2, 0.5), {})}, problems)
    run = subprocess.run([sys.executable, "-c", USE_PACKAGE, str(tmp_path), "roi_kernels", str(problems),
                          str(tmp_path / "out.pt"), "auto"], capture_output=True, text=True)
    assert run.returncode != 0 and "does not match manifest.json's sha256" in run.stderr


def test_aarch64_package_is_an_aarch64_library(tmp_path):
    if shutil.which("aarch64-linux-gnu-gcc") is None and not os.environ.get("CI"):
        pytest.skip("no aarch64 cross compiler (Debian: gcc-aarch64-linux-gnu)")
    out = tmp_path / "arm_kernels"
    generate("cpu-aarch64-neon", [], out, [parse_spec(SPECS[1])])
    header = (out / "kernels.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert "ld1" in (out / "sources" / "kernels.s").read_text() or "ldr" in (out / "sources" / "kernels.s").read_text()


def test_vulkan_package_runs(tmp_path, gen):
    require_vulkan()
    out = tmp_path / "vk_kernels"
    generate("vulkan", [], out, [parse_spec(s) for s in SPECS])
    assert (out / "kernels.wgsl.json").exists() and "@compute" in (out / "sources" / "kernels.wgsl").read_text()
    _run_package(tmp_path, out, gen)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_package_carries_cubin_and_ptxas_report(tmp_path):
    """`roigen generate --target cuda-sm90` with the default op set: every kernel of the
    package's own ptxas report is spill-free (each compiled with its own launch bounds)."""
    from roigen.specs import SPECS as ALL_OPS

    out = tmp_path / "cu_kernels"
    generate("cuda-sm90", list(ALL_OPS), out)
    assert (out / "kernels.so").exists()
    assert (out / "sources" / "kernels.cubin").read_bytes()[:4] == b"\x7fELF"
    report = json.loads((out / "sources" / "kernels.ptxas.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(report) == sum(len(e["kernels"]) for e in manifest["specs"])
    assert all(r["spill_stores"] == 0 and r["spill_loads"] == 0 for r in report.values()), report
    assert "__global__" in (out / "sources" / "kernels.cu").read_text()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "roigen", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_a_new_target_is_one_file(tmp_path, gen):
    """Adding a target: a TOML file in a folder on ROIGEN_TARGETS_PATH, then generate."""
    folder = tmp_path / "my_targets"
    folder.mkdir()
    text = (Path(__file__).parents[1] / "targets" / "cpu-x86-avx2.toml").read_text()
    (folder / "my-board.toml").write_text(text.replace('name = "cpu-x86-avx2"', 'name = "my-board"'))
    env = {"ROIGEN_TARGETS_PATH": str(folder)}
    listing = _cli("targets", env=env)
    assert listing.returncode == 0 and "my-board" in listing.stdout
    out = tmp_path / "board_kernels"
    run = _cli("generate", "--target", "my-board", "--out", str(out), *sum((["--spec", s] for s in SPECS), []),
               env=env)
    assert run.returncode == 0, run.stderr
    assert "compiling" in run.stderr  # progress
    assert json.loads((out / "manifest.json").read_text())["target"]["name"] == "my-board"
    _run_package(tmp_path, out, gen)


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "--target", "no-such", "--out", "x"], "unknown target 'no-such'"),
    (["generate", "--target", "host", "--ops", "roi_nope", "--out", "x"], "unknown op 'roi_nope'"),
    (["generate", "--target", "host", "--ops", "roi_pool", "--out", "/proc/roigen_pkg"], "--out"),
    (["generate", "--target", "host", "--spec", "roi_pool:bins=3", "--out", "x"], "no parameter"),
    (["bench", "--workloads", "nosuch"], "unknown workload 'nosuch'"),
    (["demo", "--workloads", "fpn_box,nosuch"], "unknown workload 'nosuch'"),
    (["demo", "--repeats", "0"], "--repeats"),
    (["tune", "--op", "roi_align", "--workload", "nosuch"], "unknown workload 'nosuch'"),
    (["generate", "--target", "host"], "--out"),  # argparse's own errors are one line too
    (["frobnicate"], "invalid choice"),
    ([], "required: command"),
])
def test_cli_bad_arguments_exit_nonzero_with_one_line(args, message, tmp_path):
    run = subprocess.run([sys.executable, "-m", "roigen", *args], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if "XDG_RUNTIME_DIR" not in line]
    assert len(lines) == 1 and message in lines[0], run.stderr


@pytest.mark.parametrize("command", ["targets", "ops", "generate", "tune", "bench", "demo"])
def test_cli_help(command):
    run = _cli(command, "--help")
    assert run.returncode == 0 and "usage: roigen " + command in run.stdout
