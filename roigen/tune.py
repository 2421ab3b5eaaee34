"""Autotuning: search a target's knob space for one op and workload; keep the best per device.

    roigen tune --op roi_align --workload fpn_box --target cpu --trials 64
    roigen tune --op roi_align --workload '{"input": [2, 256, 200, 272], "boxes": 1000, ...}'  # one's own
    roigen tune ... --rpc HOST:PORT --device-key KEY      # measured on a device of the RPC tracker

Each trial is one point of the family's space (`schedules/<family>.py`): the
default first, then the others in a seeded random order, without repeats.
A trial builds in this process (tvm.compile, no worker pool: meta_schedule's
LocalBuilder needed minutes per trial on a 2-core machine) and times the op's
forward and backward kernels on the workload's own inputs, median of repeats.

Locally the kernels run through roigen's runtime (CPU, CUDA or Vulkan, as
the ops run them).  With --rpc, the library is exported here and run on the
tracker's device by meta_schedule's RPCRunner, whose argument allocation and
evaluator are replaced by `roigen.remote` (the workload's boxes must be real
boxes, not random bytes).  The best point is committed as a meta_schedule
TuningRecord (`roigen.records`) under <db>/<target>/<device>/.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import records, workloads
from .backends import backend_for
from .bench import median_ms
from .target import Target, device_key, resolve, slug


@dataclass
class Trial:
    knobs: dict
    forward_ms: float = float("nan")
    backward_ms: float = float("nan")
    error: str = ""

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms if not self.error else float("inf")


def _directions(groups: dict[str, dict[str, list]]) -> list[dict[str, list]]:
    """The knobs of the forward and of the backward kernels apart, when the family groups
    them by direction (the kernels are then built apart, and each is timed alone); else
    the whole space as one."""
    from roigen.schedules import DIRECTIONS

    if set(groups) == set(DIRECTIONS):
        return [groups[d] for d in DIRECTIONS]
    return [{name: values for group in groups.values() for name, values in group.items()}]


def _grid(space: dict[str, list], rng: random.Random) -> list[dict]:
    """Every point of `space`, the default (first candidates) first, the rest shuffled."""
    names = sorted(space)
    grid = [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]
    rest = grid[1:]
    rng.shuffle(rest)
    return grid[:1] + rest


def points(space: dict[str, dict[str, list]], trials: int, seed: int = 0) -> list[dict]:
    """Up to `trials` distinct points of the space (knob groups, as `schedules.knob_groups`):
    the default first.

    A space of forward and backward knobs pairs the two halves diagonal by
    diagonal, so the first max(|forward|, |backward|) trials already time every
    forward point and every backward point once (`best` then combines them).
    """
    rng = random.Random(seed)
    halves = [_grid(half, rng) for half in _directions(space)]
    if len(halves) == 1:
        return halves[0][:max(1, trials)]
    fwd, bwd = halves
    pairs = sorted(itertools.product(range(len(fwd)), range(len(bwd))),
                   key=lambda p: ((p[1] - p[0]) % len(bwd), p[0]))
    return [{**fwd[i], **bwd[j]} for i, j in pairs][:max(1, trials)]


def best_point(space: dict[str, dict[str, list]], results: list[Trial]) -> dict | None:
    """The knobs to keep: the fastest forward half with the fastest backward half where the
    space splits that way, else the fastest trial in total."""
    ok = [t for t in results if not t.error]
    if not ok:
        return None
    halves = _directions(space)
    if len(halves) == 1:
        return min(ok, key=lambda t: t.total_ms).knobs
    fwd = min(ok, key=lambda t: t.forward_ms).knobs
    bwd = min(ok, key=lambda t: t.backward_ms).knobs
    return {**{n: fwd[n] for n in halves[0]}, **{n: bwd[n] for n in halves[1]}}


def workload_spec(op: str, workload: str | dict, target: Target):
    """The spec the ops build for this workload's inputs on `target` (NCHW float32 input), and
    the workload: a workloads.json name, JSON text or a .json file's path (workloads.resolve),
    or a dict (workloads.own)."""
    _, workload = workloads.resolve(workload, op) if isinstance(workload, str) else (None, workloads.own(workload, op))
    spec = workloads.spec_of(workload)
    return replace(spec, layout=backend_for(target).layout(type(spec), False)), workload


def measure_local(spec, target: Target, knobs: dict, workload: dict, repeats: int) -> tuple[float, float]:
    """(forward ms, backward ms) of the kernels built with `knobs`, on this machine."""
    from .build import build

    kernels = build(spec, target, knobs)
    device = backend_for(target).device_type
    x, rois = (t.to(device) for t in workloads.make_inputs(workload))
    out, aux = kernels.forward(x, rois)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(device)
    grad_input = kernels.backward(grad, rois, aux, tuple(x.shape))
    # The outputs are reused: on the CPU a fresh 400 MB tensor per call costs as
    # much in page faults as the kernel.
    fwd = {"out": out.view(spec.kernel_output_shape(x.shape, rois.shape[0])), "aux": aux}
    bwd = {"grad_input": grad_input}
    forward = median_ms(lambda: kernels.forward(x, rois, **fwd), repeats, device=device)
    backward = median_ms(lambda: kernels.backward(grad, rois, aux, tuple(x.shape), **bwd), repeats, device=device)
    return forward, backward


def _bar(done: int, total: int, best: dict | None, width: int = 24) -> str:
    filled = int(width * done / total)
    tail = f" best so far {best}" if best else ""
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}{tail}"


def _confirm(default: Trial, best: Trial, measure, rounds: int) -> tuple[Trial, Trial]:
    runs = {id(default): [], id(best): []}
    for _ in range(rounds):
        for trial in (default, best):
            runs[id(trial)].append(measure(trial.knobs))
    confirmed = []
    for trial in (default, best):
        forward, backward = zip(*runs[id(trial)])
        confirmed.append(Trial(trial.knobs, statistics.median(forward), statistics.median(backward)))
    return confirmed[0], confirmed[1]


def _keep(space: dict[str, dict[str, list]], default: Trial, best: Trial) -> Trial:
    """Of two confirmed trials, the better: half by half where the space splits into
    directions (each half's time is its own kernel's), else by total."""
    halves = _directions(space)
    if len(halves) == 1:
        return min((default, best), key=lambda t: t.total_ms)
    fwd = min((default, best), key=lambda t: t.forward_ms)
    bwd = min((default, best), key=lambda t: t.backward_ms)
    knobs = {**{n: fwd.knobs[n] for n in halves[0]}, **{n: bwd.knobs[n] for n in halves[1]}}
    return Trial(knobs, fwd.forward_ms, bwd.backward_ms)


def tune(op: str, workload: str | dict, target: str = "host", trials: int = 64, repeats: int = 5,
         db: Path | None = None, rpc: str | None = None, device: str | None = None,
         progress=sys.stderr) -> dict:
    """Tune one op on one workload (a workloads.json name, or a workload of one's own: JSON
    text, a .json file's path or a dict, workloads.resolve); commit the best point; return the
    trials and the table."""
    from roigen.schedules import knob_groups

    tgt = resolve("host" if target == "cpu" else target)
    spec, wl = workload_spec(op, workload, tgt)
    space = knob_groups(spec, tgt)
    candidates = points(space, trials)
    if rpc:
        if not device:
            raise ValueError("--rpc needs --device-key: the tracker key of the devices to tune")
        from .remote import measure_remote

        def measure(knobs):
            return measure_remote(spec, tgt, knobs, wl, repeats, rpc, device)

        key = f"{tgt.name}/{slug(device)}"
    else:
        def measure(knobs):
            return measure_local(spec, tgt, knobs, wl, repeats)

        key = device_key(tgt)
    results: list[Trial] = []
    for i, knobs in enumerate(candidates):
        trial = Trial(knobs)
        try:
            trial.forward_ms, trial.backward_ms = measure(knobs)
        except Exception as err:  # noqa: BLE001 - a failing point is skipped, not fatal
            trial.error = f"{type(err).__name__}: {err}"
        results.append(trial)
        if progress:
            progress.write(_bar(i + 1, len(candidates), best_point(space, results)))
            progress.flush()
    if progress:
        progress.write("\n")
    knobs = best_point(space, results)
    if knobs is None:
        raise RuntimeError(f"every trial failed; the first: {results[0].error}")
    default = results[0]
    best = next((t for t in results if t.knobs == knobs), Trial(knobs))
    if best is not default and not default.error:
        # One pass is noisy (and the first trial pays warm-up costs; a combined
        # point may not have run at all): measure the default and the best again,
        # alternately, and keep the medians.
        default, best = _confirm(default, best, measure, rounds=3)
        best = _keep(space, default, best)
    folder = (db or records.user_dir()) / key
    records.commit(folder, spec, tgt, best.knobs, best.total_ms / 1e3)
    label = workload if isinstance(workload, str) and workload in workloads.load()["workloads"] else json.dumps(wl)
    return {"op": op, "workload": label, "target": tgt.name, "device_key": key, "database": str(folder),
            "space": space, "trials": results, "default": default, "best": best}


def table(result: dict) -> str:
    """Markdown: default vs best per kernel."""
    d, b = result["default"], result["best"]
    rows = [f"| kernel | default {d.knobs} (ms) | best {b.knobs} (ms) | speed-up |", "|---|---:|---:|---:|"]
    for kernel, dv, bv in (("forward", d.forward_ms, b.forward_ms), ("backward", d.backward_ms, b.backward_ms)):
        rows.append(f"| {result['op']} {kernel} | {dv:.2f} | {bv:.2f} | {dv / bv:.2f}x |")
    ok = sum(1 for t in result["trials"] if not t.error)
    rows.append(f"\n{result['op']} on {result['workload']}, target {result['target']}: {ok}/{len(result['trials'])} "
                f"trials ran; record in {result['database']}")
    return "\n".join(rows)
