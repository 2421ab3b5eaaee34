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

from boxes import KINDS, as_rotated, random_rois
from devices import require_vulkan

# One worker runs this file, so the module's package fixture is built once.
pytestmark = pytest.mark.xdist_group("package")

SPECS = ["roi_align:output_size=3,spatial_scale=0.5,sampling_ratio=-1,aligned=true",
         "roi_pool:output_size=2,spatial_scale=0.5",
         "ps_roi_align:output_size=2,spatial_scale=0.5,sampling_ratio=2"]
# The host package also holds every other op, for its C++ op library (AOTInductor).
HOST_SPECS = SPECS + ["roi_align_rotated:output_size=2,spatial_scale=0.5,sampling_ratio=2",
                      "prroi_pool:output_size=2,spatial_scale=0.5",
                      "deform_roi_pool:output_size=2,spatial_scale=0.5,sampling_ratio=2",
                      "roi_warp:output_size=2,spatial_scale=0.5,sampling_ratio=2",
                      "ps_roi_pool:output_size=2,spatial_scale=0.5",
                      "roi_spp:levels=2/1,spatial_scale=0.5",
                      "spp:levels=2/1",
                      "roi_align:output_size=3,spatial_scale=0.25,sampling_ratio=-1,aligned=true"]

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


def _problems(gen, dtype=torch.float32, host: bool = False):
    x = torch.randn(2, 8, 9, 11, generator=gen, dtype=torch.float64)
    rois = random_rois(2, 9, 11, 10, 0.5, gen, kinds=KINDS)
    return {"roi_align": (x, rois, (3, 0.5, -1, True), {}),
            "roi_pool": (x, rois, (2, 0.5), {}),
            "ps_roi_align": (x, rois, (2, 0.5, 2), {}),
            # Only in the host package (HOST_SPECS):
            **({"roi_align_rotated": (x, as_rotated(rois, gen), (2, 0.5, 2), {}),
                "prroi_pool": (x, rois, (2, 0.5), {}),
                "deform_roi_pool": (x, rois, (_offsets(rois), 2, 0.5, 2), {})} if host else {})}


def _offsets(boxes):
    """Offsets of a 2x2 deformable grid for each box, in [-1, 1], that vary with the box."""
    return torch.sin(boxes[:, 1:2] * torch.arange(1, 9, dtype=boxes.dtype)).reshape(-1, 2, 2, 2)


def _run_package(tmp_path, package: Path, gen, target="auto", host: bool = False):
    problems = _problems(gen, host=host)
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
def host_package(tmp_path_factory, worker_id):
    # Built once per test session: it takes a minute, and xdist may run this file's tests
    # on more than one worker, or set the fixture up again on one (CI did both).
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base  # pytest-N/, which the workers share
    out = root / "host_package" / "roi_kernels"
    with FileLock(str(root / "host_package.lock")):
        if not (out / "manifest.json").exists():
            generate("host", [], out, [parse_spec(s) for s in HOST_SPECS], torch_library=True)
    return out


def test_host_package_runs_without_roigen_or_compiler(host_package, tmp_path, gen):
    _run_package(tmp_path, host_package, gen, host=True)


def test_manifest_lists_specs_signatures_and_hashes(host_package):
    manifest = json.loads((host_package / "manifest.json").read_text())
    assert manifest["package"] == "roi_kernels" and manifest["tvm"] and manifest["target"]["runtime"] == "llvm"
    assert {e["op"] for e in manifest["specs"]} == {parse_spec(s).name for s in HOST_SPECS}
    forward = manifest["specs"][0]["kernels"]["forward"]
    assert forward and all("name" in p for p in forward)
    assert "tuning_records" in manifest
    assert "kernels.so" in manifest["files"] and "sources/kernels.s" in manifest["files"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((host_package / rel).read_bytes()).hexdigest() == digest, rel
    assert "k0_forward" in (host_package / "sources" / "kernels.s").read_text()  # readable assembly


# Runs in a fresh process: torch and roigen's op library, neither roigen's Python ops nor TVM's.
RUN_AOTI = textwrap.dedent("""
    import sys, torch
    import roigen.torch_library
    roigen.torch_library.load(sys.argv[1])
    assert not {"roigen.ops", "tvm", "tvm_ffi"} & set(sys.modules), sorted(sys.modules)
    inputs = torch.load(sys.argv[3])
    model = torch._inductor.aoti_load_package(sys.argv[2])
    torch.save([model(*args) for args in inputs], sys.argv[4])
""")


def _every_op(t, boxes, R):
    """Each op at the host package's specs (HOST_SPECS): R is roigen.ops or roigen.reference."""
    per_image = [boxes[:3, 1:], boxes[3:, 1:]]  # the list form: image i gets its tensor's boxes
    # The same boxes rotated about their centres, by angles in [-90, 90) that vary with the box.
    centre, size = (boxes[:, 1:3] + boxes[:, 3:5]) / 2, (boxes[:, 3:5] - boxes[:, 1:3]).abs()
    rotated = torch.cat([boxes[:, :1], centre, size, (boxes[:, 1:2] * 37) % 180 - 90], 1)
    return (R.roi_align(t, boxes, 3, 0.5, -1, True), R.roi_pool(t, per_image, 2, 0.5),
            R.ps_roi_align(t, boxes, 2, 0.5, 2), R.roi_warp(t, boxes, 2, 0.5, 2), R.ps_roi_pool(t, boxes, 2, 0.5),
            R.roi_spp(t, boxes, (2, 1), 0.5), R.spp(t, (2, 1)),
            R.roi_align_rotated(t, rotated, 2, 0.5, 2), R.prroi_pool(t, boxes, 2, 0.5),
            R.deform_roi_pool(t, boxes, _offsets(boxes), 2, 0.5, 2),
            # canonical_scale 6 spreads these small boxes over both levels
            R.multi_scale_roi_align([t, t[..., ::2, ::2]], boxes, 3, [0.5, 0.25], -1, True, 6))


class EveryOp(torch.nn.Module):
    def forward(self, t, boxes):
        import roigen.ops

        return _every_op(t, boxes, roigen.ops)


def test_aoti_package_runs_with_the_op_library_alone(host_package, tmp_path, gen):
    """torch.export → AOTInductor package → run where only torch and libroigen_torch.so are loaded."""
    t = torch.randn(2, 8, 9, 11, generator=gen)
    boxes = random_rois(2, 9, 11, 7, 0.5, gen, kinds=KINDS)
    program = torch.export.export(EveryOp(), (t, boxes), dynamic_shapes=({}, {0: torch.export.Dim("K", min=5)}))
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "every_op.pt2"))
    # Other boxes and another count than the export's.  (Not another memory format: an
    # AOTInductor model takes its inputs' strides to be the export's.)
    inputs = [(t, boxes), (torch.randn(2, 8, 9, 11, generator=gen), random_rois(2, 9, 11, 12, 0.5, gen, kinds=KINDS))]
    torch.save(inputs, tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, "-c", RUN_AOTI, str(host_package), package, str(tmp_path / "inputs.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for (x, rois), got in zip(inputs, torch.load(tmp_path / "out.pt"), strict=True):
        for out, want in zip(got, _every_op(x.double(), rois.double(), reference), strict=True):
            torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


LOAD_HOST = textwrap.dedent("""
    import sys, torch
    import roigen.torch_library
    roigen.torch_library.load(specs=["roi_pool:output_size=2,spatial_scale=0.5"])
    assert "roigen.ops" not in sys.modules
    x, rois = torch.load(sys.argv[1])
    torch.save(torch.ops.roigen.roi_pool(x, rois, 0.5, 2, 2)[0], sys.argv[2])
""")


def test_load_without_a_path_builds_the_hosts_library(tmp_path, gen):
    x, rois = torch.randn(2, 8, 9, 11, generator=gen), random_rois(2, 9, 11, 6, 0.5, gen, kinds=KINDS)
    torch.save((x, rois), tmp_path / "in.pt")
    run = subprocess.run([sys.executable, "-c", LOAD_HOST, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt").double(),
                               reference.roi_pool(x.double(), rois.double(), 2, 0.5))


FORGED_LEVELS = textwrap.dedent("""
    import sys, torch
    import roigen.torch_library
    roigen.torch_library.load(sys.argv[1])
    f = [torch.randn(2, 8, 9, 11), torch.randn(2, 8, 5, 6)]
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0], [1, 2.0, 2.0, 9.0, 8.0]])
    op = torch.ops.roigen.multi_scale_roi_align
    for levels, f in ((torch.tensor([0, 2]), f), (torch.tensor([-1, 0]), f), (torch.tensor([0, 1]), [f[0], f[1][:1]])):
        try:
            op(f, rois, levels, [3, 3], [0.5, 0.25], 2, True)
        except RuntimeError as e:
            print(str(e).splitlines()[0])
        else:
            print("ran")
""")


def test_op_library_refuses_forged_levels(host_package):
    """The C++ FPN op runs each level on every box: a box with no level, or a level of another
    batch size, would leave rows unwritten; it must refuse them as the Python op does."""
    run = subprocess.run([sys.executable, "-c", FORGED_LEVELS, str(host_package)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [("levels must lie" in line, "features must share" in line) for line in lines] == \
        [(True, False), (True, False), (False, True)], lines


def test_op_library_refuses_to_shadow_the_python_ops(host_package):
    import roigen.ops  # noqa: F401
    from roigen.torch_library import load

    with pytest.raises(RuntimeError, match="registered already"):
        load(host_package)


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
    package's own ptxas report is spill-free (each compiled with its own launch bounds).
    This is every op's sm_90 check; test_cuda.py compiles each case for sm_80."""
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
    (["generate", "--target", "vulkan", "--torch-library", "--out", "x"], "--torch-library"),
    (["bench", "--workloads", "nosuch"], "unknown workload 'nosuch'"),
    (["bench", "--workload", '{"op": "roi_align", "boxes": 3}'], "workload input"),
    (["demo", "--workloads", "fpn_box,nosuch"], "unknown workload 'nosuch'"),
    (["demo", "--repeats", "0"], "--repeats"),
    (["tune", "--op", "roi_align", "--workload", "nosuch"], "unknown workload 'nosuch'"),
    (["tune", "--op", "roi_align", "--workload", "fast_rcnn_pool"], "runs roi_pool, not 'roi_align'"),
    (["tune", "--op", "roi_pool", "--workload", '{"input": [1, 8, 9, 9], "boxes": 4, "spatial_scale": 1,'
      ' "output_size": 2, "sampling_ratio": 2}'], "workload key 'sampling_ratio'"),
    (["tune", "--op", "roi_pool", "--workload", '{"input": [1, 8, 9], "boxes": 4}'], "workload input"),
    (["tune", "--op", "roi_pool", "--workload", '{"input": [1, 8, 9, 9], "boxes": 4, "spatial_scale": 1,'
      ' "output_size": 2, "box_fraction": 0}'], "workload box_fraction"),
    (["tune", "--op", "roi_pool", "--workload", '{"input": [1, 8, 9, 9], "boxes": 4,'], "not JSON"),
    (["tune", "--op", "roi_pool", "--workload", '{"input": [1, 8, 9, 9], "boxes": 4000000000000, '
      '"spatial_scale": 1, "output_size": 2}'], "the workload's map and boxes need"),
    (["generate", "--target", "host"], "--out"),  # argparse's own errors are one line too
    (["frobnicate"], "invalid choice"),
    ([], "required: command"),
])
def test_cli_bad_arguments_exit_nonzero_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(args, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], err


@pytest.mark.parametrize("command", ["targets", "ops", "generate", "tune", "bench", "demo"])
def test_cli_help(command, capsys):
    code, out, _ = _main([command, "--help"], capsys)
    assert code == 0 and "usage: roigen " + command in out


def _main(args, capsys):
    """`roigen ARGS` in this process (a child process costs seconds of imports):
    (exit code, stdout, stderr).  test_a_new_target_is_one_file runs the real command."""
    from roigen.cli import main

    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
