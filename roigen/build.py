"""Build = spec + target + schedule → compiled kernels, cached in memory and on disk.

What a build's files are, and how they load, is the target's backend's
(`roigen.backends`): `llvm` a shared library of host code; `cuda` a shared
library with the CUDA source embedded, plus the cubin and ptxas's report;
`wgpu` the WGSL of each kernel with what launching it needs.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import importlib.metadata
import json
from dataclasses import asdict
from pathlib import Path

from . import cache
from .backends import backend_for
from .target import Target, resolve


def generator_files() -> list[Path]:
    """The code that generates kernels: the specs, lowering, computes, backends and schedules,
    and the modules of roigen they import that shape the code (tests/test_cache.py checks
    that none is missing).  limits.py's sample-table sizes are compiled into the kernels and
    also size the tables the runtime allocates: a kernel cached before they changed wrote
    past tables allocated after."""
    import roigen.schedules

    here = Path(__file__).parent
    roots = [here / "specs.py", here / "lower.py", here / "limits.py", here / "target.py", here / "compute",
             here / "backends", Path(roigen.schedules.__file__).parent]
    return [path for root in roots for path in sorted([root] if root.is_file() else root.rglob("*.py"))]


# Imported by the backends to call kernels, not to generate them: an edit need not rebuild.
RUNTIME_ONLY = ("_threads.py", "cache.py", "runtime.py", "native/__init__.py")


@functools.cache
def _source_digest() -> str:
    """Hash of the code that generates kernels, so an edit invalidates old entries."""
    digest = hashlib.sha256()
    for path in generator_files():
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


def compile_kernels(spec, target: Target, sched):
    """Compile one spec's kernels: (the backend's `Compiled`, the PrimFuncs by name)."""
    from .lower import kernel_funcs

    funcs = kernel_funcs(spec, target, sched)
    return backend_for(target).compile(funcs, target, sched), funcs


def ensure_built(spec, target, knobs: dict | None = None):
    """Compile `spec` for `target` into the cache unless it is there: (entry name, schedule)."""
    target = _target(target)
    backend = backend_for(target)
    spec = spec.kernel_spec()
    backend.check_spec(spec, target)
    sched, source = plan(spec, target, knobs)
    key = cache_key(describe(spec, target, sched, source))
    name = _entry_name(key, spec, target)
    if cache.verified(name, key, backend.artifact) is None:
        with cache.building(name):
            # Another process may have built it while we waited for the lock.
            if cache.verified(name, key, backend.artifact) is None:
                compiled, _ = compile_kernels(spec, target, sched)
                cache.store(name, key, backend.library(compiled, target), compiled.files)
    return name, sched


def build(spec, target: str | Target = "host", knobs: dict | None = None):
    """The compiled kernels for `spec` (half dtypes share the float32 build); `knobs`
    overrides the schedule (tuning), else this device's tuning record or the default."""
    target = _target(target)
    backend_for(target).check_spec(spec.kernel_spec(), target)
    return _build(spec.kernel_spec(), target, None if knobs is None else tuple(sorted(knobs.items())))


@functools.lru_cache(maxsize=256)
def _build(spec, target: Target, knobs: tuple | None):
    backend = backend_for(target)
    for _ in range(2):  # a second pass rebuilds an entry found unreadable
        name, sched = ensure_built(spec, target, None if knobs is None else dict(knobs))
        try:
            kernels = backend.load(spec, sched.runtime_params(), lambda suffix, entry=name: cache.path(entry, suffix))
        except Exception as err:  # noqa: BLE001 - whatever the runtime raises, the entry is rebuilt
            cache.discard(name, err)
            continue
        # TVMScript's parser keeps an inspect.stack() of every prim_func it parses in a
        # reference cycle, so the calling frames, and the tensors they go on to hold (the
        # user's output, in the op that asked for this build), outlive their call until the
        # cycle collector runs.  Collect once per build rather than leave that to chance.
        gc.collect()
        return kernels
    raise RuntimeError(f"roigen: could not build or load {name}")
