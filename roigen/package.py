"""`roigen generate`: a self-contained kernel package for one target.

    <out>/                     importable as a Python package named after the folder
      __init__.py              loader (templates/package_init.py.j2): `import <name>`
      manifest.json            ops, specs, kernel signatures, target, TVM version, sha256 of every file
      kernels.so               the compiled library (LLVM and CUDA targets; CUDA source embedded)
      kernels.wgsl.json        Vulkan: each kernel's WGSL and launch data (there is no host library)
      sources/                 the backend's other files: kernels.s (CPU assembly) | kernels.cu,
                               kernels.cubin and ptxas's report (CUDA) | kernels.wgsl (Vulkan)
      _roigen/                 a copy of roigen's runtime and ops (no compiler), whose kernel
                               provider looks kernels up in this package
      libroigen_torch.so, torch_library.json, lib/
                               with --torch-library: the C++ op library that registers
                               torch.ops.roigen.* without Python (roigen/torch_library.py)

Kernels are specialised on an op's parameters (output size, spatial scale, …),
so a package holds a list of specs: by default the workloads' parameter sets
for the ops asked for, and a default set for ops no workload uses; `--spec`
adds more.  The package's ops take the same arguments as `roigen.ops` and
refuse, naming the parameters, a call for which it has no kernel.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

from . import workloads
from .backends import backend_for
from .specs import SPECS, OpSpec
from .target import Target, resolve

# Parameters of the default spec of an op that no workload uses.
DEFAULT_PARAMS = {"spatial_scale": 0.0625, "pooled_height": 7, "pooled_width": 7, "sampling_ratio": 2}
_ROOT = Path(__file__).parent
# The package's own kernel provider (a template) stands in for this one, which compiles.
_PROVIDER = "ops/_provider.py"


def _imports(rel: str, text: str | None = None) -> set[str]:
    """The roigen modules (paths under roigen/) that the module at `rel` imports at its top
    level: what loading it needs.  Imports inside functions are what it may do later (compile)."""
    package = Path(rel).parts[:-1]
    found = set()
    for node in ast.parse(text if text is not None else (_ROOT / rel).read_text()).body:
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[: len(package) - (node.level - 1)]
        for i in range(1, len(base) + 1):  # importing a module runs its packages' __init__
            found.add(str(Path(*base[:i], "__init__.py")))
        stem = base + tuple(node.module.split(".") if node.module else ())
        # `from .x import y`: x is a module or a package; y may be a module of package x.
        for parts in [stem] + [stem + (alias.name,) for alias in node.names]:
            for candidate in (Path(*parts).with_suffix(".py") if parts else None, Path(*parts, "__init__.py")):
                if candidate is not None and (_ROOT / candidate).is_file():
                    found.add(str(candidate))
    return found - {"__init__.py"}  # the package writes its own top-level __init__


@functools.cache
def runtime_files() -> tuple[str, ...]:
    """roigen's runtime and ops, copied into every package: what the ops import when they
    load, and so on, with the package's provider (a template) in place of roigen's, which
    reaches the compiler."""
    template = resources.files("roigen.templates").joinpath("package_provider.py.j2").read_text()
    todo = sorted(_imports("ops/__init__.py") | _imports(_PROVIDER, template) | {"ops/__init__.py"})
    seen = set()
    while todo:
        rel = todo.pop()
        if rel in seen or rel == _PROVIDER:
            continue
        seen.add(rel)
        todo += sorted(_imports(rel) - seen)
    return tuple(sorted(seen))


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
    """The builds the ops will ask for: one per layout the backend runs the spec in."""
    backend = backend_for(target)
    out = [replace(spec.kernel_spec(), layout=layout) for spec in specs for layout in backend.layouts(type(spec))]
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


def generate(target: str | Target, ops: list[str], out, specs: list[OpSpec] | None = None, progress=None,
             torch_library: bool = False) -> Path:
    """Write the package for `target` into `out` (created; must not hold another package).

    Returns the manifest's path.  `progress(message)` is called as work proceeds.
    `torch_library`: also build the C++ op library (roigen.torch_library).
    """
    from .build import plan
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
    backend = backend_for(target)
    if torch_library:
        from .torch_library import check_target

        check_target(target)
    builds = _layouts(specs if specs else default_specs(ops), target)
    for spec in builds:
        try:
            backend.check_spec(spec, target)
        except TypeError as err:
            raise ValueError(f"--spec: {err}") from None

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
                        "runtime": sched.runtime_params(),
                        "kernels": {k: _signature(f) for k, f in own.items()}})
    say(f"compiling {len(funcs)} kernels of {len(builds)} specs for {target.name}")
    compiled = backend.compile(funcs, target, sched)

    if out.exists():
        shutil.rmtree(out)
    (out / "sources").mkdir(parents=True)
    files = {}
    library = backend.library(compiled, target)
    if library is not None:
        library(out / backend.package_path(".so"))
    written = {backend.package_path(suffix): content for suffix, content in compiled.files.items()}
    written.update({f"sources/{name}": content for name, content in backend.sources(compiled).items()})
    for rel, content in written.items():
        (out / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
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
    if torch_library:
        from . import torch_library as native

        say("building the torch op library")
        native.build(out, native.describe(builds, entries, target), say)
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
    for rel in runtime_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    (dest / "__init__.py").write_text(_render("package_runtime_init.py.j2", name=name))
    (dest / "ops" / "_provider.py").write_text(_render("package_provider.py.j2", name=name))
