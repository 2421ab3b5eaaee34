"""The on-disk kernel cache: one shared library per (spec, target, schedule, TVM, source).

Entries are plain files named `<op>-<target>-<digest>.so`, each beside a
`.json` holding everything its key was made from, so a cache can be read and
diffed.  Writes go to a temporary file renamed into place, so a reader never
sees half an entry; an entry that fails to load is reported once and rebuilt.
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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(name: str):
    """The cached module called `name`, or None if absent or unreadable."""
    # tvm's runtime, not just tvm_ffi's loader: the kernels call its thread pool
    # and workspace allocator (tvm_ffi.load_module alone segfaults at the call).
    import tvm

    path = cache_dir() / f"{name}.so"
    if not path.exists():
        return None
    try:
        return tvm.runtime.load_module(str(path))
    except Exception as err:  # a truncated or foreign file: rebuild it
        warnings.warn(f"roigen: discarding unreadable cache entry {path}: {err}", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def store(name: str, executable, meta: dict) -> Path:
    folder = cache_dir()
    path = folder / f"{name}.so"
    _atomic_write(path, lambda tmp: executable.export_library(tmp))
    _atomic_write(folder / f"{name}.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
    return path
