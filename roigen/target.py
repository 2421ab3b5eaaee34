"""Targets are data: `targets/*.toml` (installed as `roigen.targets`).

`host` is an alias resolved from the machine's own CPU features.
"""

from __future__ import annotations

import functools
import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # which schedules/ module serves it
    runtime: str
    vector_bits: int
    tvm: tuple  # the TVM target dict, as sorted items (hashable)

    @property
    def tvm_target(self):
        import tvm

        return tvm.target.Target(dict(self.tvm))

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "runtime": self.runtime,
                "vector_bits": self.vector_bits, "tvm": dict(self.tvm)}


def _target_files() -> dict[str, Path]:
    folder = resources.files("roigen.targets")
    return {p.name[: -len(".toml")]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def available() -> list[str]:
    return sorted(_target_files()) + ["host"]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def host_name() -> str:
    """The target file that fits this machine's CPU."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"no CPU target for {platform.machine()} yet; available: {available()}")
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "cpu-x86-avx512"
    if {"avx2", "fma"} <= flags:
        return "cpu-x86-avx2"
    return "cpu-x86-64"


def load_file(path: Path) -> Target:
    data = tomllib.loads(Path(path).read_text())
    try:
        return Target(name=data["name"], family=data["family"], runtime=data["runtime"],
                      vector_bits=int(data["vector_bits"]), tvm=tuple(sorted(data["tvm"].items())))
    except KeyError as err:
        raise ValueError(f"target file {path} lacks the key {err.args[0]!r}") from None


@functools.cache
def resolve(name: str = "host") -> Target:
    if name == "host":
        name = host_name()
    files = _target_files()
    if name not in files:
        raise ValueError(f"unknown target {name!r}; available: {available()}")
    return load_file(files[name])
