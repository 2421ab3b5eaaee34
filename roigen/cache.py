"""The on-disk kernel cache: one entry per (spec, target, schedule, TVM, source).

An entry is a set of files `<op>-<target>-<digest>.<suffix>`: the compiled
artifact (`.so` for LLVM and CUDA, `.wgsl.json` for Vulkan), any sources and
reports kept for reading (`.cu`, `.ptxas.json`), and a `.json` holding
everything the key was made from, so a cache can be read and diffed.  Writes
go to a temporary file renamed into place, so a reader never sees half a
file; an artifact that fails to load is reported once and rebuilt.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("ROIGEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "roigen"


def path(name: str, suffix: str) -> Path:
    return cache_dir() / f"{name}{suffix}"


def atomic_write(target: Path, write) -> None:
    """`write(tmp_path)`, then rename into `target`: readers see the old file or the whole new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: export_library picks the format from it.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _discard(file: Path, err: Exception) -> None:
    warnings.warn(f"roigen: discarding unreadable cache entry {file}: {err}", stacklevel=4)
    file.unlink(missing_ok=True)


def load(name: str):
    """The cached shared library `name`, or None if absent or unreadable."""
    # tvm's runtime, not just tvm_ffi's loader: the kernels call its thread pool
    # and workspace allocator (tvm_ffi.load_module alone segfaults at the call).
    import tvm

    file = path(name, ".so")
    if not file.exists():
        return None
    try:
        return tvm.runtime.load_module(str(file))
    except Exception as err:  # a truncated or foreign file: rebuild it
        _discard(file, err)
        return None


def load_json(name: str, suffix: str):
    """A cached JSON artifact, or None if absent or unreadable."""
    file = path(name, suffix)
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        _discard(file, err)
        return None


def store(name: str, meta: dict, library=None, files: dict | None = None) -> None:
    """Write an entry: the library (if any: `library(path)` writes it), extra files by
    suffix, then the key."""
    if library is not None:
        atomic_write(path(name, ".so"), library)
    for suffix, content in (files or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        atomic_write(path(name, suffix), lambda tmp, c=content, m=mode: open(tmp, m).write(c))
    atomic_write(path(name, ".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
