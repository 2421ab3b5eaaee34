"""`roigen generate`: a self-contained kernel package for one target.

    <out>/                     importable as a Python package named after the folder
      __init__.py              loader (templates/package_init.py.j2): `import <name>`
      manifest.json            ops, specs, kernel signatures, target, TVM version, sha256 of every file
      kernels.so               the compiled library (LLVM and CUDA targets; CUDA source embedded)
      kernels.wgsl.json        Vulkan: each kernel's WGSL and launch data (there is no host library)
      sources/                 for reading: kernels.s (CPU assembly) | kernels.cu, kernels.cubin and
                               ptxas's report (CUDA) | kernels.wgsl (Vulkan)
      _roigen/                 a copy of roigen's runtime and ops (no compiler), whose kernel
                               provider looks kernels up in this package

Kernels are specialised on an op's parameters (output size, spatial scale, …),
so a package holds a list of specs: by default the workloads' parameter sets
for the ops asked for, and a default set for ops no workload uses; `--spec`
adds more.  The package's ops take the same arguments as `roigen.ops` and
refuse, naming the parameters, a call for which it has no kernel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

from . import workloads
from .specs import SPECS, OpSpec
from .target import Target, resolve

# Parameters of the default spec of an op that no workload uses.
DEFAULT_PARAMS = {"spatial_scale": 0.0625, "pooled_height": 7, "pooled_width": 7, "sampling_ratio": 2}
# roigen's runtime and ops, copied into every package: everything but the compiler.
RUNTIME_FILES = ("_threads.py", "limits.py", "specs.py", "runtime.py", "gpu_runtime.py", "vulkan.py", "cuda.py", "target.py",
                 "ops/__init__.py", "ops/_checks.py", "ops/_registry.py", "ops/multi_scale.py",
                 "ops/ps_roi.py", "ops/roi_align.py", "ops/roi_pool.py", "ops/roi_warp.py", "ops/spp.py")


def _coerce(value: str):
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_spec(text: str) -> OpSpec:
    """"roi_align:output_size=7,spatial_scale=0.125,sampling_ratio=2,aligned=true" → a spec.

    `output_size` sets pooled_height and pooled_width; `levels` takes numbers joined by "/".
    """
    op, _, rest = text.partition(":")
    if op not in SPECS:
        raise ValueError(f"--spec: unknown op {op!r}; ops: {sorted(SPECS)}")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--spec {text!r}: expected key=value, got {item!r}")
        if key == "output_size":
            params["pooled_height"] = params["pooled_width"] = int(value)
        elif key == "levels":
            params["levels"] = tuple(int(v) for v in value.split("/"))
        else:
            params[key] = _coerce(value)
    fields = {f.name for f in SPECS[op].op_fields()}
    params = {**{k: v for k, v in DEFAULT_PARAMS.items() if k in fields}, **params}
    unknown = set(params) - fields
    if unknown:
        raise ValueError(f"--spec {text!r}: {op} has no parameter {sorted(unknown)}; it takes {sorted(fields)}")
    return SPECS[op](**params)


def default_specs(ops: list[str]) -> list[OpSpec]:
    """Each op's parameter sets from workloads.json, or DEFAULT_PARAMS where none uses it."""
    specs = []
    table = workloads.load()["workloads"]
    for op in ops:
        if op not in SPECS:
            raise ValueError(f"unknown op {op!r}; ops: {sorted(SPECS)}")
        found = [workloads.spec_of(w) for w in table.values() if w["op"] == op]
        specs += found or [parse_spec(op)]
    return list(dict.fromkeys(specs))


def _layouts(specs: list[OpSpec], target: Target) -> list[OpSpec]:
    """The builds the ops will ask for: GPU kernels read NHWC; CPU channel-block ops
    have one build per input memory format."""
    out = []
    for spec in specs:
        spec = spec.kernel_spec()
        if target.family == "gpu":
            out.append(replace(spec, layout="NHWC"))
        elif spec.packed:
            out += [replace(spec, layout="NCHW"), replace(spec, layout="NHWC")]
        else:
            out.append(replace(spec, layout="NCHW"))
    return list(dict.fromkeys(out))


def _signature(func) -> list[dict]:
    """Each parameter: a buffer's dtype and (symbolic) shape, or a scalar's type."""
    params = []
    for p in func.params:
        try:
            params.append({"name": p.name, "dtype": str(p.dtype), "shape": [str(d) for d in p.shape]})
        except AttributeError:  # a scalar parameter
            params.append({"name": p.name, "type": str(p.ty)})
    return params


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _render(template: str, **context) -> str:
    import jinja2

    text = resources.files("roigen.templates").joinpath(template).read_text()
    return jinja2.Template(text, keep_trailing_newline=True).render(**context)


def generate(target: str | Target, ops: list[str], out, specs: list[OpSpec] | None = None, progress=None) -> Path:
    """Write the package for `target` into `out` (created; must not hold another package).

    Returns the manifest's path.  `progress(message)` is called as work proceeds.
    """
    from .build import compile_funcs, export, plan
    from .lower import kernel_funcs

    say = progress or (lambda message: None)
    target = resolve(target) if isinstance(target, str) else target
    out = Path(out)
    name = out.name
    if not name.isidentifier():
        raise ValueError(f"--out: the package is imported by its folder's name, which must be a Python "
                         f"identifier; got {name!r}")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise ValueError(f"--out: {out} exists and is not a roigen package; refusing to write into it")
    builds = _layouts(specs if specs else default_specs(ops), target)
    if target.runtime == "wgpu" and any(s.compute_dtype == "float64" for s in builds):
        raise ValueError("target 'vulkan' has no float64 kernels (WGSL has no 64-bit floats)")

    funcs, entries, records = {}, [], []
    sched = None
    for i, spec in enumerate(builds):
        sched, source = plan(spec, target)
        if source:
            records.append({"op": spec.name, "key": spec.key(), **source})
        prefix = f"k{i}_"
        own = kernel_funcs(spec, target, sched)
        funcs.update({prefix + k: f for k, f in own.items()})
        entries.append({"op": spec.name, "spec": json.loads(spec.key()), "key": spec.key(), "prefix": prefix,
                        "lanes": [getattr(sched, f"{d}_lanes", 0) for d in ("forward", "backward")],
                        "kernels": {k: _signature(f) for k, f in own.items()}})
    say(f"compiling {len(funcs)} kernels of {len(builds)} specs for {target.name}")
    executable, extra = compile_funcs(funcs, target, sched)

    if out.exists():
        shutil.rmtree(out)
    (out / "sources").mkdir(parents=True)
    files = {}
    if target.runtime != "wgpu":
        export(executable, target, out / "kernels.so")
    if target.runtime == "llvm":
        (out / "sources" / "kernels.s").write_text(executable.mod.inspect_source("asm"))
    elif target.runtime == "cuda":
        for suffix in (".cu", ".cubin", ".ptxas.txt", ".ptxas.json"):
            content = extra[suffix]
            (out / "sources" / f"kernels{suffix}").write_bytes(content if isinstance(content, bytes)
                                                                else content.encode())
    else:
        (out / "kernels.wgsl.json").write_text(extra[".wgsl.json"])
        (out / "sources" / "kernels.wgsl").write_text(executable.mod.imports[0].inspect_source())
    say("writing the loader and runtime")
    _write_runtime(out, name)
    manifest = {
        "package": name,
        "target": target.describe(),
        "roigen": importlib.metadata.version("roigen"),
        "tvm": importlib.metadata.version("apache-tvm"),
        "tuning_records": records,
        "specs": entries,
    }
    (out / "__init__.py").write_text(_render("package_init.py.j2", name=name, target=target.name,
                                             ops=sorted({e["op"] for e in entries})))
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        files[str(path.relative_to(out))] = _sha256(path)
    manifest["files"] = files
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    say(f"wrote {out} ({len(files)} files)")
    return path


def _write_runtime(out: Path, name: str) -> None:
    """Copy roigen's runtime and ops under <out>/_roigen, with the package's namespace and provider."""
    src = Path(__file__).parent
    dest = out / "_roigen"
    for rel in RUNTIME_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    (dest / "__init__.py").write_text(_render("package_runtime_init.py.j2", name=name))
    (dest / "ops" / "_provider.py").write_text(_render("package_provider.py.j2", name=name))
