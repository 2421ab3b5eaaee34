"""The `cuda` runtime: TVM's CUDA source compiled by nvcc to a cubin, with ptxas's resource report.

TVM 0.27 keeps the CUDA *source* in the exported library and compiles it when
the library is loaded, through the `tvm_callback_cuda_compile` hook (NVRTC by
default, which needs the cuda-bindings package).  roigen compiles at build
time instead, with the nvcc on PATH, keeping `-Xptxas -v`'s report
(registers, spills, shared memory per kernel) and the cubin beside the
library; at load time its hook hands the runtime that prebuilt cubin,
matched by the source's sha256, so nothing compiles on the GPU machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import to_tvm
from .base import Backend, Compiled
from .gpu_kernels import GpuKernels

_FUNCTION = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_BOUNDS = re.compile(r"__launch_bounds__\((\d+)\)")


# TVM's own ptxas options (tvm.support.nvcc).
_PTXAS = ["-Xptxas", "-v,--register-usage-level=10,--warn-on-local-memory-usage"]
# Unused temporaries in TVM's generated code (declared but never referenced).
_QUIET = ["-diag-suppress", "177,550"]


class NvccMissing(RuntimeError):
    pass


@dataclass
class CudaBuild:
    """What nvcc made of TVM's CUDA source: the source, the cubin and ptxas's report."""

    source: str = ""
    cubin: bytes = b""
    report: str = ""
    resources: dict = field(default_factory=dict)


def parse_report(text: str) -> dict:
    """ptxas -v output → {kernel: {arch, registers, spill_stores, spill_loads, stack, shared}}."""
    found: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if m := _FUNCTION.search(line):
            current = found.setdefault(m.group(1), {"arch": m.group(2), "registers": 0, "spill_stores": 0,
                                                    "spill_loads": 0, "stack": 0, "shared": 0})
        elif current is not None and (m := _FRAME.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m.group(1))
            if s := _SMEM.search(line):
                current["shared"] = int(s.group(1))
    return found


def with_min_blocks(code: str, min_blocks: int) -> str:
    """Each kernel's `__launch_bounds__(threads)` (TVM writes one per kernel, with its own
    block size) given a minimum of resident blocks per SM, so ptxas caps each kernel's
    registers by its own block size (a module-wide -maxrregcount fits one size only)."""
    return _BOUNDS.sub(lambda m: f"__launch_bounds__({m.group(1)}, {min_blocks})", code)


def nvcc(code: str, arch: str, min_blocks: int = 1) -> CudaBuild:
    """Compile CUDA C to a cubin for `arch` (e.g. "sm_90"), each kernel's registers leaving
    room for `min_blocks` resident blocks per SM.  `source` is `code` as given (the
    runtime matches it to the cubin); nvcc compiles it with the launch bounds."""
    exe = shutil.which("nvcc")
    if exe is None:
        raise NvccMissing("CUDA targets compile with nvcc, which is not on PATH (install the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="roigen-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        src.write_text(with_min_blocks(code, min_blocks))
        run = subprocess.run([exe, "--cubin", "-O3", f"-arch={arch}", *_PTXAS, *_QUIET, "-o", str(out), str(src)],
                             capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"nvcc failed for {arch}:\n{run.stderr[-4000:]}")
        return CudaBuild(source=code, cubin=out.read_bytes(), report=run.stderr,
                         resources=parse_report(run.stderr))


# sha256 of a CUDA source → its prebuilt cubin, for the load-time hook.
_PREBUILT: dict[str, bytes] = {}


def source_of(executable) -> str:
    """The CUDA C of a compiled module (its one CUDA import)."""
    return executable.mod.imports[0].inspect_source()


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def provide_cubin(code: str, cubin: bytes) -> None:
    """Let the next load of a library holding `code` use `cubin` instead of compiling."""
    _PREBUILT[_digest(code)] = cubin
    _install_hook()


@functools.cache
def _install_hook() -> None:
    import tvm_ffi

    def load_time_compile(code):
        cubin = _PREBUILT.get(_digest(code))
        if cubin is None:  # not built by roigen: compile for this GPU
            import torch

            major, minor = torch.cuda.get_device_capability()
            cubin = nvcc(code, f"sm_{major}{minor}").cubin
        return bytearray(cubin)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", load_time_compile, override=True)


class CudaLauncher:
    """TVM's CUDA module of one build, loaded on first use (loading needs a GPU driver)
    with the cubin nvcc made at build time (`provide_cubin`)."""

    def __init__(self, library, source, cubin, prefix: str = ""):
        self.paths = (str(library), source, cubin)
        self.prefix = prefix
        self._module = None

    def _load(self):
        if self._module is None:
            import tvm

            library, source, cubin = self.paths
            provide_cubin(source.read_text(), cubin.read_bytes())
            self._module = tvm.runtime.load_module(library)
        return self._module

    def implements(self, name: str) -> bool:
        return self._load().implements_function(self.prefix + name)

    def __call__(self, name: str, *tensors) -> None:
        import tvm_ffi

        fn = self._load()[self.prefix + name]
        with tvm_ffi.use_torch_stream():
            fn(*(to_tvm(t) for t in tensors))


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    device_kind = "cuda-device"

    def layout(self, spec_cls, channels_last: bool) -> str:
        return "NHWC"  # the GPU computes read NHWC whatever the input's layout (the kernels convert)

    def compile(self, funcs: dict, target, sched) -> Compiled:
        """TVM's library (with the CUDA source embedded) plus the CUDA C, nvcc's cubin and
        ptxas's report."""
        from ..lower import compile_gpu

        executable = compile_gpu(funcs, target)
        build = nvcc(source_of(executable), target.tvm["arch"], sched.min_blocks)
        return Compiled(executable, {".cu": build.source, ".cubin": build.cubin, ".ptxas.txt": build.report,
                                     ".ptxas.json": json.dumps(build.resources, indent=2, sort_keys=True)})

    def load(self, spec, params: dict, file, prefix: str = ""):
        return GpuKernels(spec, CudaLauncher(file(".so"), file(".cu"), file(".cubin"), prefix))

    def device_name(self) -> str:
        import torch

        major, minor = torch.cuda.get_device_capability()
        return f"{torch.cuda.get_device_name()} sm{major}{minor}"


BACKEND = CudaBackend()
