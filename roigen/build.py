"""Build = spec + target + schedule → compiled kernels, cached in memory and on disk.

Per runtime, the artifact is: `llvm` a shared library of host code; `cuda` a
shared library with the cubin embedded, plus the CUDA source and ptxas's
resource report; `wgpu` the WGSL of each kernel with what launching it needs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import asdict
from pathlib import Path

from . import cache
from .target import Target, resolve


@functools.cache
def _source_digest() -> str:
    """Hash of the code that generates kernels, so an edit invalidates old entries."""
    import roigen.schedules

    here = Path(__file__).parent
    roots = [here / "specs.py", here / "lower.py", here / "compute", here / "cuda.py", here / "vulkan.py",
             Path(roigen.schedules.__file__).parent]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def plan(spec, target: Target, knobs: dict | None = None):
    """(schedule, where its knobs came from): the given knobs, else this device's tuning
    record for the spec, else the family default."""
    from roigen.schedules import schedule_for

    from . import records

    if knobs is not None:
        return schedule_for(spec, target, knobs), {"knobs": dict(knobs)}
    found, source = records.lookup(spec, target)
    return schedule_for(spec, target, found), source


def describe(spec, target: Target, sched, source) -> dict:
    """Everything a compiled kernel depends on (`plan`'s schedule and record): its cache key is a hash of this."""
    return {
        "spec": json.loads(spec.key()),
        "target": target.describe(),
        "schedule": {"type": type(sched).__name__, **asdict(sched)},
        "tuning": source,  # the record used, if any
        "tvm": importlib.metadata.version("apache-tvm"),
        "source": _source_digest(),
    }


def cache_key(meta: dict) -> dict:
    """`describe`'s dict less where a tuning record was found: the record itself (its
    trace) is what the kernels depend on, so caches stay valid across checkouts."""
    tuning = {k: v for k, v in (meta["tuning"] or {}).items() if k != "database"}
    return json.loads(json.dumps({**meta, "tuning": tuning or None}))  # as the entry's record reads back


def _entry_name(key: dict, spec, target: Target) -> str:
    text = json.dumps(key, sort_keys=True)
    return f"{spec.name}-{target.name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def _target(target) -> Target:
    return resolve(target) if isinstance(target, str) else target


def _check_dtype(spec, target: Target) -> None:
    if target.runtime == "wgpu" and spec.compute_dtype == "float64":
        raise TypeError(f"input dtype float64 is not supported on target {target.name!r}: "
                        "WGSL has no 64-bit floats; pass float32 (or a half type)")


def compile_funcs(funcs: dict, target: Target, sched):
    """Compile named PrimFuncs with TVM: (executable, extra files by suffix).

    CUDA: the CUDA C, nvcc's cubin and ptxas's report; Vulkan: the launch
    artifact (roigen.vulkan).
    """
    import tvm

    from .lower import as_module

    mod = as_module(funcs)
    if target.runtime == "cuda":
        from . import cuda

        executable = tvm.compile(mod, target=target.tvm_target)
        build = cuda.nvcc(cuda.source_of(executable), target.tvm["arch"], sched.min_blocks)
        return executable, {".cu": build.source, ".cubin": build.cubin, ".ptxas.txt": build.report,
                            ".ptxas.json": json.dumps(build.resources, indent=2, sort_keys=True)}
    if target.runtime == "wgpu":
        from . import vulkan

        # Without CSE every scalar a kernel reads is a shape variable the
        # Vulkan launcher can name (CSE hoists host-computed temporaries).
        with tvm.transform.PassContext(config={"tirx.disable_cse_tir": True}):
            executable = tvm.compile(mod, target=target.tvm_target)
        return executable, {".wgsl.json": vulkan.dumps(vulkan.artifact(executable, funcs))}
    return tvm.compile(mod, target=target.tvm_target), {}


def export(executable, target: Target, path) -> None:
    """Write the shared library, linked by the target's cross compiler where it names one."""
    executable.export_library(str(path), **({"cc": target.cc} if target.cc else {}))


def compile_kernels(spec, target: Target, sched):
    """Compile one spec's kernels: (executable, funcs, extra files by suffix)."""
    from .lower import kernel_funcs

    funcs = kernel_funcs(spec, target, sched)
    executable, files = compile_funcs(funcs, target, sched)
    return executable, funcs, files


def ensure_built(spec, target, knobs: dict | None = None):
    """Compile `spec` for `target` into the cache unless it is there: (entry name, schedule)."""
    target = _target(target)
    spec = spec.kernel_spec()
    _check_dtype(spec, target)
    sched, source = plan(spec, target, knobs)
    key = cache_key(describe(spec, target, sched, source))
    name = _entry_name(key, spec, target)
    artifact = ".wgsl.json" if target.runtime == "wgpu" else ".so"
    if cache.verified(name, key, artifact) is None:
        with cache.building(name):
            # Another process may have built it while we waited for the lock.
            if cache.verified(name, key, artifact) is None:
                executable, _, files = compile_kernels(spec, target, sched)
                library = None if target.runtime == "wgpu" else (lambda tmp: export(executable, target, tmp))
                cache.store(name, key, library, files)
    return name, sched


def build(spec, target: str | Target = "host", knobs: dict | None = None):
    """The compiled kernels for `spec` (half dtypes share the float32 build); `knobs`
    overrides the schedule (tuning), else this device's tuning record or the default."""
    target = _target(target)
    _check_dtype(spec.kernel_spec(), target)
    return _build(spec.kernel_spec(), target, None if knobs is None else tuple(sorted(knobs.items())))


@functools.lru_cache(maxsize=256)
def _build(spec, target: Target, knobs: tuple | None):
    from .gpu_runtime import CudaLauncher, GpuKernels, VulkanLauncher
    from .runtime import Kernels

    for _ in range(2):  # a second pass rebuilds an entry found unreadable
        name, sched = ensure_built(spec, target, None if knobs is None else dict(knobs))
        if target.runtime == "cuda":
            return GpuKernels(spec, CudaLauncher(cache.path(name, ".so"), cache.path(name, ".cu"),
                                                 cache.path(name, ".cubin")))
        if target.runtime == "wgpu":
            from .vulkan import VulkanModule

            data = cache.load_json(name, ".wgsl.json")
            if data is not None:
                return GpuKernels(spec, VulkanLauncher(VulkanModule(data)))
        else:
            module = cache.load(name)
            if module is not None:
                return Kernels(spec, (sched.forward_lanes, sched.backward_lanes), module)
    raise RuntimeError(f"roigen: could not build or load {name}")
