"""The on-disk kernel cache: one entry per (spec, target, schedule, TVM, source).

An entry is a set of files `<op>-<target>-<digest>.<suffix>`: the compiled
artifact (`.so` for LLVM and CUDA, `.wgsl.json` for Vulkan), any sources and
reports kept for reading (`.cu`, `.ptxas.json`), and a `.json` holding
everything the key was made from plus the sha256 of every other file of the
entry.  The `.json` is written last, so an entry without one is unfinished.

A file's name proves nothing (a library can be swapped for another entry's,
truncated, or replaced by a foreign one, and loading a library runs its code),
so `verified` checks the key and every sha256 before anything is loaded; an
entry that fails is reported once and rebuilt.  Builds of one entry hold a
lock (flock, released by the kernel if the builder dies), under which they
also remove the temporary files a killed builder left.  Writes go to a
temporary file renamed into place, so a reader never sees half a file.  When
the cache folder cannot be written, builds go to a private temporary folder
for the rest of the process (one warning).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

_fallback: Path | None = None
_warned: set[str] = set()


def cache_dir() -> Path:
    if _fallback is not None:
        return _fallback
    explicit = os.environ.get("ROIGEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "roigen"


def path(name: str, suffix: str) -> Path:
    return cache_dir() / f"{name}{suffix}"


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=4)


def _use_fallback(err: OSError) -> Path:
    """Build into a private temporary folder from now on (removed at exit)."""
    global _fallback
    unusable = cache_dir()
    _fallback = Path(tempfile.mkdtemp(prefix="roigen-cache-"))
    atexit.register(shutil.rmtree, _fallback, ignore_errors=True)
    _warn_once("fallback", f"roigen: cannot write the kernel cache {unusable} ({err.strerror or err}); "
                           f"building into {_fallback} for this process instead (set ROIGEN_CACHE_DIR)")
    return _fallback


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(name: str, key: dict, artifact: str) -> dict | None:
    """The entry's record if it is whole and is the build `key` describes, else None.

    Checks that the record exists, holds exactly `key` and names
    `artifact`, and that every file it names has its recorded sha256.  Anything
    else (absent, unfinished, swapped, truncated, foreign) is None; what was
    present but wrong is reported once.
    """
    record_path = path(name, ".json")
    if not record_path.exists():
        if path(name, artifact).exists():
            _warn_once(name, f"roigen: rebuilding the unfinished cache entry {name} (it has no record)")
        return None
    try:
        record = json.loads(record_path.read_text())
        ok = record.get("key") == key and artifact in record.get("sha256", {})
        ok = ok and all(sha256(path(name, suffix)) == digest for suffix, digest in record["sha256"].items())
    except (OSError, ValueError, AttributeError, TypeError) as err:
        ok, reason = False, err
    else:
        reason = "its key or a file's sha256 does not match"
    if not ok:
        _warn_once(name, f"roigen: discarding unreadable cache entry {name}: {reason}; rebuilding it")
        return None
    return record


@contextlib.contextmanager
def building(name: str):
    """Hold entry `name`'s build lock; first remove the temporaries of a builder that died."""
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f".{name}.lock", "a")
    except OSError as err:
        folder = _use_fallback(err)
        lock = open(folder / f".{name}.lock", "a")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for a builder of the same entry
        for stale in folder.glob(f".{name}*"):
            if stale.name != f".{name}.lock":  # ours alone while we hold the lock
                stale.unlink(missing_ok=True)
        yield


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


def discard(name: str, err: Exception) -> None:
    """A verified entry that still fails to load: report it once and drop its record,
    so the next build replaces it."""
    _warn_once(name, f"roigen: discarding unreadable cache entry {name}: {err}")
    path(name, ".json").unlink(missing_ok=True)


def store(name: str, key: dict, library=None, files: dict | None = None) -> None:
    """Write an entry (under `building(name)`): the library (if any: `library(path)` writes
    it), extra files by suffix, then the record with the key and every file's sha256."""
    digests = {}
    if library is not None:
        atomic_write(path(name, ".so"), library)
        digests[".so"] = sha256(path(name, ".so"))
    for suffix, content in (files or {}).items():
        data = content if isinstance(content, bytes) else content.encode()
        atomic_write(path(name, suffix), lambda tmp, d=data: Path(tmp).write_bytes(d))
        digests[suffix] = hashlib.sha256(data).hexdigest()
    record = {"key": key, "sha256": digests}
    atomic_write(path(name, ".json"), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2, sort_keys=True)))
