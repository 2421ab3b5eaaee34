"""Tuning records: schedule knobs as meta_schedule decisions, kept per device.

A family's knob space (`schedules/<family>.py: space`) is sampled on a
`tvm.s_tir.Schedule` with one `sample_categorical` per knob (candidates are
the knob's values), so a point of the space is a meta_schedule trace.  The
trace is stored as a `TuningRecord` in a meta_schedule `JSONDatabase`, one
per device, under `tuning/<target>/<device>/` (`roigen.target.device_key`).

The record's workload is a small IRModule naming the op's spec and target
family, not the kernels' TIR: kernels are symbolic in box count, map size and
channel blocks, so one record serves the op at every shape, and looking it up
does not generate any TIR.  roigen's kernels are generated from the knob
values (TVMScript with no schedulable blocks), so applying a record means
replaying its trace on that workload and reading the sampled values back.

Builds look records up in the user's directory (`ROIGEN_TUNING_DIR`, default
`~/.local/share/roigen/tuning`) and then in the records shipped with roigen
(`tuning/`, installed as `roigen.tuning`); a miss, or a database that is
unreadable or does not match the current knob space, falls back to the
default schedule (the latter two with a warning).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from importlib import resources
from pathlib import Path

WORKLOAD_FILE = "database_workload.json"
MAX_RECORDS = 64  # records of one op a lookup considers, fastest first
RECORD_FILE = "database_tuning_record.json"


def user_dir() -> Path:
    explicit = os.environ.get("ROIGEN_TUNING_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "roigen" / "tuning"


def shipped_dir() -> Path:
    return Path(str(resources.files("roigen.tuning")))


def workload_module(spec, target):
    """The meta_schedule workload of an op's kernels: the spec and target family, as an IRModule."""
    import tvm
    from tvm.script import tirx as T

    @T.prim_func
    def kernels():
        T.evaluate(0)

    identity = json.dumps({"spec": json.loads(spec.kernel_spec().key()), "family": target.family}, sort_keys=True)
    return tvm.IRModule({"main": kernels.with_attr("roigen.kernels", identity)})


def sample(spec, target, knobs: dict):
    """A schedule whose trace holds one sample_categorical decision per knob (sorted by name)."""
    import tvm

    from roigen.schedules import space_for

    sch = tvm.s_tir.Schedule(workload_module(spec, target))
    for name, values in sorted(space_for(spec, target).items()):
        sch.sample_categorical(candidates=list(values), probs=[1.0 / len(values)] * len(values),
                               decision=list(values).index(knobs[name]))
    return sch


def replay(record, spec, target) -> dict:
    """Apply a record's trace to the op's workload and read back the knob values it chose."""
    import tvm

    from roigen.schedules import space_for

    space = sorted(space_for(spec, target).items())
    sch = tvm.s_tir.Schedule(workload_module(spec, target))
    record.trace.apply_to_schedule(sch, remove_postproc=True)
    values = [int(sch.get(inst.outputs[0])) for inst in sch.trace.insts if inst.kind.name == "SampleCategorical"]
    if len(values) != len(space):
        raise ValueError(f"the record samples {len(values)} knobs, the space has {len(space)}")
    knobs = {}
    for (name, candidates), value in zip(space, values):
        if value not in candidates:
            raise ValueError(f"the record's {name}={value} is not among the candidates {candidates}")
        knobs[name] = candidates[candidates.index(value)]  # the candidate itself: True, not 1
    return knobs


@functools.cache
def _database(folder: str):
    """The JSONDatabase in `folder`, or None (with a warning) if its files are unreadable."""
    from tvm.s_tir import meta_schedule as ms

    path = Path(folder)
    try:
        for name in (WORKLOAD_FILE, RECORD_FILE):  # refuse damaged JSON before TVM parses it
            text = (path / name).read_text()
            for line in filter(None, text.splitlines()):
                json.loads(line)
        return ms.database.JSONDatabase(str(path / WORKLOAD_FILE), str(path / RECORD_FILE), allow_missing=False)
    except Exception as err:  # noqa: BLE001 - any damage means: fall back to the default
        warnings.warn(f"roigen: ignoring the tuning database in {path}: {err}", stacklevel=4)
        return None


def database_dirs(target) -> list[Path]:
    """The record folders a build on this device consults, the user's first."""
    from .target import device_key

    try:
        key = device_key(target)
    except Exception:  # noqa: BLE001 - no such device here (a CUDA build on a machine without a GPU)
        return []
    return [d / key for d in (user_dir(), shipped_dir()) if (d / key / RECORD_FILE).exists()]


def lookup(spec, target) -> tuple[dict | None, dict | None]:
    """(knobs, where they came from) of the best record for `spec` on this device, or (None, None)."""
    dirs = database_dirs(target)
    if not dirs:
        return None, None
    mod = workload_module(spec, target)
    for folder in dirs:
        db = _database(str(folder))
        if db is None or not db.has_workload(mod):
            continue
        # Fastest first; a record of another knob space (an older roigen's) is
        # skipped with a warning, and the next one tried.
        for record in db.get_top_k(db.commit_workload(mod), MAX_RECORDS):
            try:
                knobs = replay(record, spec, target)
            except Exception as err:  # noqa: BLE001 - a record of another knob space
                warnings.warn(f"roigen: ignoring a tuning record in {folder} for {spec.name}: {err}",
                              stacklevel=3)
                continue
            return knobs, {"database": str(folder), "trace": str(record.trace),
                           "run_secs": [float(s) for s in record.run_secs]}
    return None, None


def commit(folder: Path, spec, target, knobs: dict, seconds: float) -> None:
    """Add a record of `knobs` measured at `seconds` to the database in `folder`."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    folder.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(str(folder / WORKLOAD_FILE), str(folder / RECORD_FILE))
    sch = sample(spec, target, knobs)
    workload = db.commit_workload(workload_module(spec, target))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [seconds],
                                                     tvm.target.Target(target.tvm), []))
    _database.cache_clear()
