"""Targets are data: `targets/*.toml` (installed as `roigen.targets`).

A target file names the TVM target, the schedule family that serves it
(`schedules/<family>.py`), the runtime that loads its kernels (`llvm`: host
code; `cuda`: CUDA through TVM's runtime; `wgpu`: WGSL on a Vulkan device),
and, under [schedule], the facts about the hardware its schedule reads.
`host` is an alias resolved from the machine's own CPU features.
"""

from __future__ import annotations

import functools
import json
import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

RUNTIMES = ("llvm", "cuda", "wgpu")


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # which schedules/ module serves it
    runtime: str  # one of RUNTIMES
    tvm_json: str  # the TVM target dict, as sorted JSON (hashable)
    facts_json: str = "{}"  # the [schedule] table: what the schedule family reads
    machine: str = ""  # CPU targets: the architecture they run on (platform.machine())
    cpu_flags: tuple = ()  # CPU targets: /proc/cpuinfo flags they need

    @property
    def tvm(self) -> dict:
        return json.loads(self.tvm_json)

    @property
    def facts(self) -> dict:
        return json.loads(self.facts_json)

    def fact(self, key: str):
        try:
            return self.facts[key]
        except KeyError:
            raise ValueError(f"target {self.name!r} lacks [schedule] {key}, which family "
                             f"{self.family!r} needs") from None

    @property
    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm)

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "runtime": self.runtime,
                "schedule": self.facts, "tvm": self.tvm, "machine": self.machine,
                "cpu_flags": list(self.cpu_flags)}


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


def runnable_here(target: Target) -> bool:
    """Whether this machine can run a CPU target's code (its architecture and ISA flags)."""
    return (target.runtime == "llvm" and target.machine == platform.machine()
            and set(target.cpu_flags) <= _cpu_flags())


def host_name() -> str:
    """The CPU target that fits this machine: of those it can run, the widest vectors."""
    runnable = [t for t in map(load_file, _target_files().values()) if runnable_here(t)]
    if not runnable:
        raise RuntimeError(f"no CPU target runs on this {platform.machine()} machine; "
                           f"available: {available()} (add a targets/ file for it)")
    return max(runnable, key=lambda t: (int(t.facts.get("vector_bits", 0)), len(t.cpu_flags))).name


def load_file(path: Path) -> Target:
    data = tomllib.loads(Path(path).read_text())
    try:
        target = Target(name=data["name"], family=data["family"], runtime=data["runtime"],
                        tvm_json=json.dumps(data["tvm"], sort_keys=True),
                        facts_json=json.dumps(data.get("schedule", {}), sort_keys=True),
                        machine=data.get("machine", ""), cpu_flags=tuple(data.get("cpu_flags", ())))
    except KeyError as err:
        raise ValueError(f"target file {path} lacks the key {err.args[0]!r}") from None
    if target.runtime not in RUNTIMES:
        raise ValueError(f"target file {path}: runtime must be one of {RUNTIMES}, got {target.runtime!r}")
    return target


@functools.cache
def resolve(name: str = "host") -> Target:
    if name == "host":
        name = host_name()
    files = _target_files()
    if name not in files:
        raise ValueError(f"unknown target {name!r}; available: {available()}")
    return load_file(files[name])


def cuda_name(capability: tuple[int, int]) -> str:
    """The CUDA target whose cubin runs on a device of this compute capability.

    A cubin runs on its own major architecture at any later minor version, so
    sm_86 and sm_89 take the sm_80 build.
    """
    major, _ = capability
    name = f"cuda-sm{major}0"
    if name not in _target_files():
        raise ValueError(f"no CUDA target for compute capability {major}.{capability[1]}; "
                         f"available: {available()} (add a targets/ file for it)")
    return name
