"""roigen's ops registered from C++: `torch.ops.roigen.*` in a process without roigen's Python ops.

An AOTInductor package, or any program that loads torch without Python, calls the ops
through the dispatcher; so a kernel package can carry a small op library
(`roigen generate --torch-library`):

    <package>/libroigen_torch.so   roigen/native/torch_ops.cpp, built against this torch:
                                   registers the package's forward ops when loaded
    <package>/torch_library.json   what it reads: the ops' schemas (roigen's Python
                                   registration, so they are the same ops) and, for each
                                   compiled spec, its parameters, output shapes and kernels
    <package>/lib/                 TVM's runtime, which the kernels call (libtvm_runtime.so,
                                   libtvm_ffi.so)

`load()` loads such a library into this process without importing `roigen.ops`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import NAMESPACE

LIBRARY = "libroigen_torch.so"
DESCRIPTION = "torch_library.json"


def _dims(shape) -> list[list]:
    """Symbolic output dimensions as (source, mul, div): value(source) * mul // div."""
    import sympy

    out = []
    for dim in shape:
        dim = sympy.sympify(dim)
        if not dim.free_symbols:
            out.append(["1", int(dim), 1])
            continue
        (symbol,) = dim.free_symbols
        exact = dim.args[0] if isinstance(dim, sympy.floor) else dim
        ratio = sympy.Rational(exact / symbol)
        out.append([symbol.name, int(ratio.p), int(ratio.q)])
    return out


def _shapes(spec) -> dict:
    import sympy

    n, c, h, w, rows = sympy.symbols("N C H W rows", integer=True, positive=True)
    return {"output": _dims(spec.output_shape((n, c, h, w), rows)),
            "kernel_output": _dims(spec.kernel_output_shape((n, c, h, w), rows))}


def check_target(target) -> None:
    from .backends import backend_for

    if not backend_for(target).torch_library:
        raise ValueError(f"--torch-library: the C++ op library runs CPU targets' kernels, not {target.name}'s")


def describe(builds, entries: list[dict], target) -> dict:
    """torch_library.json for a package's specs (`builds`, with their manifest `entries`):
    the C++ library runs the NCHW builds (contiguous inputs) of CPU targets."""
    import torch

    from . import ops  # noqa: F401  (registers the ops whose schemas the library copies)
    from .backends.llvm import fixed_table_entries
    from .limits import _SMALL, MAX_PIXELS, MAX_TABLE_ENTRIES
    from .ops._adapter import params_of

    check_target(target)
    kernels = []
    for spec, entry in zip(builds, entries):
        if spec.layout != "NCHW":
            continue
        runtime = entry["runtime"]
        tables = "tables" in entry["kernels"]
        kernels.append({
            "op": spec.name, "dtype": spec.dtype, "prefix": entry["prefix"],
            "params": params_of(spec),
            "packed": spec.packed, "pack": runtime["layout_pass"]["forward"], "lanes": runtime["lanes"]["forward"],
            "tables": tables, "table_entries": fixed_table_entries(spec) if tables else 0,
            "aux": bool(spec.aux_outputs), "box_columns": spec.row_columns,
            "nonnegative_box_columns": list(spec.nonnegative_box_columns), **_shapes(spec)})
    names = sorted({k["op"] for k in kernels})
    if "roi_align" in names:  # FPN's op runs roi_align's kernels
        names.append("multi_scale_roi_align")
    schemas = []
    for name in names:
        schema = str(getattr(getattr(torch.ops, NAMESPACE), name).default._schema)
        schemas.append({"name": name, "schema": schema.removeprefix(f"{NAMESPACE}::{name}")})
    return {"target": target.name, "ops": schemas, "kernels": kernels,
            "limits": {"max_table_entries": MAX_TABLE_ENTRIES, "max_pixels": MAX_PIXELS, "reserve_above": _SMALL}}


def _runtime_libraries() -> list[Path]:
    """TVM's runtime libraries, which the kernels call."""
    import tvm
    import tvm_ffi.libinfo

    return [Path(tvm_ffi.libinfo.find_libtvm_ffi()), Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so"]


def _copy_runtime(folder: Path) -> dict:
    (folder / "lib").mkdir(exist_ok=True)
    for path in _runtime_libraries():
        shutil.copyfile(path, folder / "lib" / path.name)
    return {"library_dirs": [folder / "lib"]}


def build(out: Path, description: dict, progress=None) -> Path:
    """Write torch_library.json, TVM's runtime and the op library into package `out`.

    The op library depends only on its source and this torch: it is compiled once into
    roigen's cache, then copied."""
    import tvm_ffi.libinfo

    from . import native

    say = progress or (lambda message: None)
    out = Path(out)
    (out / DESCRIPTION).write_text(json.dumps(description, indent=2, sort_keys=True))
    _copy_runtime(out)
    say("compiling the op library (once per torch version)")
    library = native.build("torch_ops.cpp", LIBRARY, _copy_runtime, includes=[tvm_ffi.libinfo.find_include_path()],
                           libraries=["tvm_ffi"], rpaths=["$ORIGIN/lib"])
    shutil.copyfile(library, out / LIBRARY)
    return out / LIBRARY


def host_package(specs=()) -> Path:
    """The host's package with a torch library, generated into roigen's cache on first use:
    every op at its default parameter sets, or only `specs` (`roigen generate --spec` syntax).

    Generated by a child process: generating reads the schemas from roigen's Python ops,
    which must not be imported here."""
    from .build import _source_digest
    from .cache import cache_dir
    from .target import resolve

    target = resolve("host")
    sources = [p.read_text() for p in sorted((Path(__file__).parent / "native").glob("*.[ch]*"))]
    key = hashlib.sha256(json.dumps([target.name, sorted(specs), sources, _source_digest()]).encode()).hexdigest()
    out = cache_dir() / f"torch_package_{key[:16]}" / "roigen_host"
    if not (out / LIBRARY).exists():
        command = [sys.executable, "-m", "roigen", "generate", "--target", "host", "--torch-library",
                   "--out", str(out), *(a for s in specs for a in ("--spec", s))]
        subprocess.run(command, check=True)
    return out


def load(path=None, *, specs=()) -> Path:
    """Load an op library into this process: `torch.ops.roigen.*` run its package's kernels.

    `path`: the library or its package folder; None: the host's package (`host_package`:
    built on first use, for `specs` if given).  Returns the library's path."""
    import torch

    path = Path(path) if path is not None else host_package(specs)
    library = path / LIBRARY if path.is_dir() else path
    if not library.is_file():
        raise FileNotFoundError(f"{library}: no roigen op library; build one with "
                                "`roigen generate --torch-library --out DIR`")
    torch.ops.load_library(str(library))
    error = ctypes.CDLL(str(library)).roigen_torch_error
    error.restype = ctypes.c_char_p
    message = error().decode()
    if message:
        raise RuntimeError(f"{library}: {message}")
    return library

