"""roigen's C++, compiled against the installed torch with the system compiler (which TVM
needs anyway, to link kernels) and kept in roigen's cache.

    torch_ops.cpp        the op library of a kernel package (roigen/torch_library.py)
    parallel_launch.h    TVM's parallel launch on torch's thread pool (both libraries use it)
    parallel.cpp         that launch for kernels loaded from Python (run_on_torch_threads)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).parent


def compile_command(source: Path, output: Path, *, includes=(), libraries=(), library_dirs=(),
                    rpaths=()) -> list[str]:
    """A shared library from one C++ file, against this torch's headers and libraries."""
    import torch
    from torch.utils import cpp_extension

    torch_libs = cpp_extension.library_paths()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    # -fopenmp: at::parallel_for is a header template, parallel only when compiled with
    # OpenMP; it then links libgomp.so.1, the one torch has loaded.
    return [os.environ.get("CXX", "c++"), "-O2", "-std=c++20", "-shared", "-fPIC", "-w", "-fopenmp",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{HERE}",
            *(f"-I{d}" for d in [*cpp_extension.include_paths(), *includes]), str(source), "-o", str(output),
            *(f"-L{d}" for d in [*torch_libs, *library_dirs]), *(f"-l{lib}" for lib in libraries),
            "-lc10", "-ltorch_cpu", "-ltorch",
            *(f"-Wl,-rpath,{d}" for d in [*rpaths, *torch_libs])]


def build(source: str, name: str, prepare=None, **options) -> Path:
    """`source` (a file here) compiled into roigen's cache as `name`, once per source and torch.

    `prepare(folder)` readies the folder first (libraries to link from it) and returns more
    options; `options` go to compile_command."""
    import torch

    from ..cache import cache_dir

    text = b"".join(p.read_bytes() for p in sorted(HERE.glob("*.[ch]*")))
    flags = " ".join(compile_command(Path(source), Path(name), **options)).encode()
    key = hashlib.sha256(text + flags + torch.__version__.encode() + sys.version.encode()).hexdigest()[:16]
    built = cache_dir() / f"native-{key}" / name
    if built.exists():
        return built
    built.parent.mkdir(parents=True, exist_ok=True)
    if prepare is not None:
        options = {**options, **prepare(built.parent)}
    partial = built.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(compile_command(HERE / source, partial, **options), capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"compiling {HERE / source} failed:\n{result.stderr[-4000:]}")
    os.replace(partial, built)
    return built


@functools.cache
def _launch() -> int:
    """The address of roigen_parallel_launch (parallel.cpp)."""
    library = ctypes.CDLL(str(build("parallel.cpp", "libroigen_parallel.so")))
    return ctypes.cast(library.roigen_parallel_launch, ctypes.c_void_p).value


def run_on_torch_threads(path: str) -> bool:
    """Point the loaded kernel library at `path` at torch's thread pool (parallel_launch.h).

    False where it cannot be: a library whose kernels synchronise inside a parallel loop
    (TVM's barrier, which torch's pool has not), or a compiler error: TVM's pool then."""
    library = ctypes.CDLL(path)  # the handle TVM loaded: the same copy of its globals
    if hasattr(library, "__TVMBackendParallelBarrier"):
        return False
    try:
        launch = _launch()
    except (RuntimeError, OSError) as err:
        warnings.warn(f"roigen: kernels run on TVM's thread pool, not torch's: {err}", stacklevel=2)
        return False
    ctypes.c_void_p.in_dll(library, "__TVMBackendParallelLaunch").value = launch
    return True
