"""Targets are data: `targets/*.toml` (installed as `roigen.targets`).

A target file names the TVM target, the schedule family that serves it
(`schedules/<family>.py`), the runtime whose backend compiles and loads its
kernels (`roigen/backends/<runtime>.py`: `llvm` host code, `cuda` CUDA
through TVM's runtime, `wgpu` WGSL on a Vulkan device), and, under
[schedule], the facts about the hardware its schedule reads.  `host` is an
alias resolved from the machine's own CPU features, or ROIGEN_HOST_TARGET.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    family: str  # which schedules/ module serves it
    runtime: str  # the backend that compiles and loads its kernels (roigen.backends)
    tvm_json: str  # the TVM target dict, as sorted JSON (hashable)
    facts_json: str = "{}"  # the [schedule] table: what the schedule family reads
    machine: str = ""  # CPU targets: the architecture they run on (platform.machine())
    cpu_flags: tuple = ()  # CPU targets: /proc/cpuinfo flags they need
    cc: str = ""  # the C compiler that links the library, when not the host's (cross targets)
    device_key: str = ""  # how tuning records name the device: see device_key()

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

    @classmethod
    def from_description(cls, d: dict) -> Target:
        """The inverse of describe() (a generated package rebuilds its target from its manifest)."""
        return cls(name=d["name"], family=d["family"], runtime=d["runtime"],
                   tvm_json=json.dumps(d["tvm"], sort_keys=True), facts_json=json.dumps(d["schedule"], sort_keys=True),
                   machine=d.get("machine", ""), cpu_flags=tuple(d.get("cpu_flags", ())), cc=d.get("cc", ""),
                   device_key=d.get("device_key", ""))

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "runtime": self.runtime,
                "schedule": self.facts, "tvm": self.tvm, "machine": self.machine,
                "cpu_flags": list(self.cpu_flags), "cc": self.cc, "device_key": self.device_key}


def _target_files() -> dict[str, Path]:
    """Target files by name: roigen's own, then those in ROIGEN_TARGETS_PATH's folders (which win)."""
    folders = [Path(str(resources.files("roigen.targets")))]
    folders += [Path(p) for p in os.environ.get("ROIGEN_TARGETS_PATH", "").split(os.pathsep) if p]
    return {p.name[: -len(".toml")]: p for folder in folders if folder.is_dir()
            for p in sorted(folder.iterdir()) if p.name.endswith(".toml")}


def available() -> list[str]:
    return sorted(_target_files()) + ["host"]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    # Read once: every CPU op call asks whether the host runs its target (reading and
    # parsing this took about 20 of the 170 microseconds an op spent outside its kernels).
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                "")


def runnable_here(target: Target) -> bool:
    """Whether this machine can run a CPU target's code (its architecture and ISA flags)."""
    return bool(target.machine) and target.machine == platform.machine() and set(target.cpu_flags) <= _cpu_flags()


def host_name() -> str:
    """The CPU target that fits this machine: ROIGEN_HOST_TARGET if set (a narrower ISA than
    the machine has, say), else of those it can run, the widest vectors."""
    forced = os.environ.get("ROIGEN_HOST_TARGET")
    if forced:
        if forced not in _target_files():
            raise ValueError(f"ROIGEN_HOST_TARGET={forced!r} names no target; available: {available()}")
        if not runnable_here(load_file(_target_files()[forced])):
            raise ValueError(f"ROIGEN_HOST_TARGET={forced!r} does not run on this machine")
        return forced
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
                        machine=data.get("machine", ""), cpu_flags=tuple(data.get("cpu_flags", ())),
                        cc=data.get("cc", ""), device_key=data.get("device_key", ""))
    except KeyError as err:
        raise ValueError(f"target file {path} lacks the key {err.args[0]!r}") from None
    from .backends import BACKENDS

    if target.runtime not in BACKENDS:
        raise ValueError(f"target file {path}: runtime must be one of {sorted(BACKENDS)} (roigen.backends), "
                         f"got {target.runtime!r}")
    return target


def resolve(name: str = "host") -> Target:
    """The target called `name` ("host": this machine's CPU)."""
    return _resolve(name, *target_environment())


def target_environment() -> tuple[str, str]:
    """What target names resolve to depends on: where target files are looked for, and
    which of them the host is."""
    return os.environ.get("ROIGEN_TARGETS_PATH", ""), os.environ.get("ROIGEN_HOST_TARGET", "")


@functools.cache
def _resolve(name: str, _targets_path: str, _host: str) -> Target:  # cached per environment
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


def slug(text: str) -> str:
    """A name fit for a folder: runs of other characters become one dash."""
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()) or "unknown"


def device_key(target: Target) -> str:
    """`<target>/<the actual device>`: which records a build may use (see the target's device_key).

    cpu-model: the CPU's model name; cuda-device: GPU name and compute
    capability; vulkan-adapter: the adapter's name.  ROIGEN_DEVICE_KEY overrides
    the device part (the name a remote device was tuned under, see `roigen tune --rpc`).
    """
    if os.environ.get("ROIGEN_DEVICE_KEY"):  # a fleet machine, named as on the RPC tracker
        return f"{target.name}/{slug(os.environ['ROIGEN_DEVICE_KEY'])}"
    from .backends import backend_for, device_name

    return f"{target.name}/{slug(device_name(target.device_key or backend_for(target).device_kind))}"
