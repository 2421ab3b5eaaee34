"""Build = spec + target + schedule → one compiled module, cached in memory and on disk."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import asdict
from pathlib import Path

from . import cache
from .runtime import Kernels
from .target import Target, resolve



@functools.cache
def _source_digest() -> str:
    """Hash of the code that generates kernels, so an edit invalidates old entries."""
    import roigen.schedules

    roots = [Path(__file__).parent / "specs.py", Path(__file__).parent / "lower.py",
             Path(__file__).parent / "compute", Path(roigen.schedules.__file__).parent]
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


def build(spec, target: str | Target = "host") -> Kernels:
    """The compiled kernels for `spec` (half dtypes share the float32 build)."""
    return _build(spec.kernel_spec(), resolve(target) if isinstance(target, str) else target)


@functools.lru_cache(maxsize=256)
def _build(spec, target: Target) -> Kernels:
    from roigen.schedules import schedule_for

    sched = schedule_for(spec, target)
    name = entry_name(spec, target)
    module = cache.load(name)
    if module is None:
        import tvm  # the compiler, only on a cache miss

        from .lower import lower

        executable = tvm.compile(lower(spec, sched), target=target.tvm_target)
        cache.store(name, executable, describe(spec, target))
        module = cache.load(name)
    return Kernels(spec, sched.lanes, module)
