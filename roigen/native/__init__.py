"""roigen's C++, compiled against the installed torch with the system compiler (which TVM
needs anyway, to link kernels) and kept in roigen's cache.

    torch_ops.cpp        the op library of a kernel package (roigen/torch_library.py)
    parallel_launch.h    TVM's parallel launch on torch's thread pool (both libraries use it)
    output_pool.h        memory of large outputs, kept for reuse once the caller frees them
    runtime.cpp          both for roigen's Python runtime: run_on_torch_threads, serially, empty,
                         rows_ok
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
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
def _runtime() -> ctypes.CDLL:
    """runtime.cpp, built on first use."""
    import psutil
    import tvm_ffi.libinfo

    library = ctypes.CDLL(str(build("runtime.cpp", "libroigen_runtime.so",
                                    includes=[tvm_ffi.libinfo.find_dlpack_include_path()])))
    library.roigen_pool_tensor.restype = ctypes.c_void_p
    library.roigen_pool_tensor.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_int64), ctypes.c_uint8,
                                           ctypes.c_uint8]
    library.roigen_pool_set_limit.argtypes = [ctypes.c_uint64]
    library.roigen_rows_ok.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                       ctypes.c_int64, ctypes.c_uint64]
    library.roigen_pool_idle_bytes.restype = ctypes.c_uint64
    library.roigen_pool_size_class.restype = ctypes.c_uint64
    library.roigen_pool_size_class.argtypes = [ctypes.c_uint64]
    library.roigen_pool_set_limit(min(psutil.virtual_memory().total // 8, POOL_LIMIT))
    return library


def _launch() -> int:
    return ctypes.cast(_runtime().roigen_parallel_launch, ctypes.c_void_p).value


# Outputs below this come from malloc's arenas, which reuse memory already.
POOLED = 1 << 20
# Idle memory the output pool keeps at most by default (and at most 1/8 of the RAM).
POOL_LIMIT = 4 << 30
# DLPack's (type code, bits) of the dtypes the kernels write.
_DLPACK = {"float32": (2, 32), "float64": (2, 64), "int32": (0, 32), "int64": (0, 64)}
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype = ctypes.py_object
_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def empty(shape, dtype):
    """`torch.empty(shape, dtype=dtype)` on the CPU; large ones in memory from the output pool
    (output_pool.h), which gets it back when the tensor is freed.  The same tensor to the
    caller, without the page faults of fresh memory."""
    import torch

    shape = tuple(int(d) for d in shape)
    kind = _DLPACK.get(str(dtype).removeprefix("torch."))
    if kind is None or math.prod(shape) * dtype.itemsize < POOLED:
        return torch.empty(shape, dtype=dtype)
    pointer = _runtime().roigen_pool_tensor(len(shape), (ctypes.c_int64 * len(shape))(*shape), *kind)
    if not pointer:
        raise MemoryError(f"roigen: cannot allocate {math.prod(shape) * dtype.itemsize} bytes for an output")
    return torch.from_dlpack(_capsule(pointer, b"dltensor", None))


def rows_ok(rois, batch: int, nonnegative: tuple[int, ...] = ()) -> bool:
    """Whether a contiguous CPU float32/float64 (K, columns) box tensor holds finite values, an
    integer batch index in [0, batch) in column 0 and values >= 0 in the columns `nonnegative`:
    one native pass (runtime.cpp), no torch op.  False for any other tensor: the caller's
    torch checks then decide, and name what is wrong."""
    import torch

    if (rois.device.type != "cpu" or rois.dtype not in (torch.float32, torch.float64) or not rois.is_contiguous()
            or any(col >= 64 for col in nonnegative)):
        return False
    mask = sum(1 << col for col in nonnegative)
    return bool(_runtime().roigen_rows_ok(rois.data_ptr(), rois.shape[0], rois.shape[1],
                                          rois.dtype == torch.float64, batch, mask))


def set_pool_limit(nbytes: int) -> None:
    """Keep at most `nbytes` of freed output memory for reuse (0: none); releases any excess now."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    _runtime().roigen_pool_set_limit(nbytes)


def pool_idle_bytes() -> int:
    """Freed output memory the pool holds now."""
    return _runtime().roigen_pool_idle_bytes()


def pool_block_bytes(tensor) -> int:
    """The pool memory a tensor of this many bytes takes (its size class)."""
    return _runtime().roigen_pool_size_class(tensor.numel() * tensor.element_size())


def trim_pool() -> int:
    """Give the pool's idle memory back to the system; returns how much that was."""
    if not _runtime.cache_info().currsize:  # not loaded: nothing pooled
        return 0
    idle = pool_idle_bytes()
    _runtime().roigen_pool_trim()
    return idle


def serially(fn, *args):
    """`fn(*args)`, its kernel's parallel loops run as one task on this thread (a library that
    `run_on_torch_threads` pointed here): for kernels whose work costs less than waking a
    worker thread."""
    runtime = _runtime()
    runtime.roigen_set_serial(1)
    try:
        return fn(*args)
    finally:
        runtime.roigen_set_serial(0)


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
