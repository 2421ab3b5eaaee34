"""The layering rules: an op is five files, a runtime one backend, knobs belong to schedules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import roigen.ops
from roigen import reference
from roigen.backends import BACKENDS, Backend
from roigen.compute import FAMILIES, compute_module
from roigen.ops import _adapter
from roigen.package import runtime_files
from roigen.specs import SPECS
from roigen.target import available, resolve

from cases import ALL

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "roigen"


def _sections() -> set[str]:
    """The op names docs/ROI_OPS.md has a section for ("## a / b — title")."""
    names = set()
    for line in (ROOT / "docs" / "ROI_OPS.md").read_text().splitlines():
        if line.startswith("## "):
            names |= {n.strip(" `") for n in line[3:].split(" — ")[0].split("/")}
    return names


@pytest.mark.parametrize("name", sorted(SPECS))
def test_an_op_is_its_spec_two_computes_its_reference_and_its_ops_module(name):
    spec_cls = SPECS[name]
    for family in FAMILIES:  # compute/cpu/<op>.py, compute/gpu/<op>.py
        assert callable(compute_module(family, spec_cls).kernels), f"compute/{family}/{name}.py"
    assert name in reference.REFERENCES, "roigen/reference.py"
    module = _adapter.op_module(spec_cls)  # roigen/ops/<op>.py: the public function and its oracle
    assert callable(getattr(module, name)) and callable(module.oracle)
    assert getattr(roigen.ops, name) is getattr(module, name) and name in roigen.ops.__all__
    assert any(case.name == name for case in ALL), "tests/cases.py has no case for it"
    assert name in _sections(), "docs/ROI_OPS.md has no section for it"


def test_every_shipped_target_has_a_backend_and_a_compute_family():
    for name in available():
        if name == "host":
            continue
        target = resolve(name)
        assert isinstance(BACKENDS.get(target.runtime), Backend), f"{name}: runtime {target.runtime!r}"
        assert target.family in FAMILIES, f"{name}: family {target.family!r}"


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "templates").glob("*.j2")):
        yield path, path.read_text()


def test_only_backends_name_runtimes():
    for path, text in _sources():
        if PACKAGE / "backends" in path.parents:
            continue
        assert not re.search(r"\bruntime\s*(==|!=|in\s)", text), path


def test_only_schedules_read_knobs_by_name():
    knob = re.compile(r"\b(forward|backward)_(lanes|fuse|shuffle)\b|startswith\(.(forward|backward)_")
    for path, text in _sources():
        assert not knob.search(text), path


def test_packages_carry_the_runtime_not_the_compiler():
    files = set(runtime_files())
    assert {"ops/__init__.py", "ops/_registry.py", "backends/llvm.py", "backends/wgpu.py"} <= files
    assert {f"ops/{name}.py" for name in SPECS} <= files
    assert not {"build.py", "lower.py", "package.py", "tune.py", "ops/_provider.py"} & files
    assert not any(f.startswith("compute/") for f in files)
