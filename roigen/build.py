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


def describe(spec, target: Target) -> dict:
    """Everything a compiled kernel depends on: its cache key is a hash of this."""
    from roigen.schedules import schedule_for

    sched = schedule_for(spec, target)
    return {
        "spec": json.loads(spec.key()),
        "target": target.describe(),
        "schedule": {"type": type(sched).__name__, **asdict(sched)},
        "tvm": importlib.metadata.version("apache-tvm"),
        "source": _source_digest(),
    }


def entry_name(spec, target: Target) -> str:
    text = json.dumps(describe(spec, target), sort_keys=True)
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
        build = cuda.nvcc(cuda.source_of(executable), target.tvm["arch"], sched.registers)
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


def compile_kernels(spec, target: Target):
    """Compile one spec's kernels: (executable, funcs, extra files by suffix)."""
    from roigen.schedules import schedule_for

    from .lower import kernel_funcs

    sched = schedule_for(spec, target)
    funcs = kernel_funcs(spec, target, sched)
    executable, files = compile_funcs(funcs, target, sched)
    return executable, funcs, files


def ensure_built(spec, target) -> str:
    """Compile `spec` for `target` into the cache unless it is there; returns the entry name."""
    target = _target(target)
    spec = spec.kernel_spec()
    _check_dtype(spec, target)
    name = entry_name(spec, target)
    artifact = ".wgsl.json" if target.runtime == "wgpu" else ".so"
    if not cache.path(name, artifact).exists():
        executable, _, files = compile_kernels(spec, target)
        library = None if target.runtime == "wgpu" else (lambda tmp: export(executable, target, tmp))
        cache.store(name, describe(spec, target), library, files)
    return name


def build(spec, target: str | Target = "host"):
    """The compiled kernels for `spec` (half dtypes share the float32 build)."""
    target = _target(target)
    _check_dtype(spec.kernel_spec(), target)
    return _build(spec.kernel_spec(), target)


@functools.lru_cache(maxsize=256)
def _build(spec, target: Target):
    from roigen.schedules import schedule_for

    from .gpu_runtime import CudaLauncher, GpuKernels, VulkanLauncher
    from .runtime import Kernels

    for _ in range(2):  # a second pass rebuilds an entry found unreadable
        name = ensure_built(spec, target)
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
                return Kernels(spec, schedule_for(spec, target).lanes, module)
    raise RuntimeError(f"roigen: could not build or load {name}")
