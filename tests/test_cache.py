"""The on-disk kernel cache: a second process loads kernels without compiling."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from zygote import Zygote

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time, torch, tvm
    mode, result = sys.argv[1], sys.argv[2]
    scale = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "forbid-compile":
        def refuse(*args, **kwargs):
            raise AssertionError("compiled although the kernel was cached")
        tvm.compile = refuse
    import roigen.build, roigen.cache
    write = roigen.cache.atomic_write

    def die_while_writing(suffix, partial):
        # The process killed once `partial(tmp)` has half written the temporary `suffix` file.
        def half_written(target, fn):
            if target.suffix == suffix:
                write(target, lambda tmp: (partial(tmp), die()))
            write(target, fn)
        roigen.cache.atomic_write = half_written

    if mode == "kill-compiling":  # killed inside the compiler
        tvm.compile = die
    elif mode == "kill-writing-library":  # a temporary library half written
        die_while_writing(".so", lambda tmp: open(tmp, "wb").write(b"\\x7fELF" + b"\\0" * 1000))
    elif mode == "kill-before-record":  # the library in place, its record not
        def until_record(target, fn):
            if target.suffix == ".json":
                die()
            write(target, fn)
        roigen.cache.atomic_write = until_record
    elif mode == "kill-writing-record":  # a temporary record half written
        die_while_writing(".json", lambda tmp: open(tmp, "w").write('{"key": '))
    import roigen.ops as R
    torch.manual_seed(0)
    x = torch.randn(1, 9, 6, 7)
    rois = torch.tensor([[0, 0.5, 1.0, 5.0, 4.5]])
    start = time.perf_counter()
    out = R.ps_roi_pool(x, rois, 3, scale)  # the quickest op to build; caching is the same for all
    print(time.perf_counter() - start)
    torch.save(out, result)
""")


# One worker runs this file, so its zygote and first build happen once.
pytestmark = pytest.mark.xdist_group("cache")


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def _run(zygote, tmp_path, cache, mode, stderr=None, scale=1.0, check=True):
    """SCRIPT in a new process (forked from the zygote) with its own cache folder."""
    result = tmp_path / f"{mode}-{scale}.pt"
    run = zygote.run(SCRIPT, [mode, str(result), str(scale)], {"ROIGEN_CACHE_DIR": str(cache)})
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    if stderr is not None:
        stderr.append(run.stderr)
    return torch.load(result) if check else run.returncode


def _entries(cache: Path) -> dict[str, Path]:
    """The cache's libraries by scale (their records say which)."""
    found = {}
    for record in cache.glob("*.json"):
        key = json.loads(record.read_text())["key"]
        found[key["spec"]["spatial_scale"]] = record.with_suffix(".so")
    return found


def _hidden(cache: Path) -> list[str]:
    """Files a build leaves besides its entries and their locks (temporaries)."""
    return [p.name for p in cache.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


@pytest.fixture(scope="module")
def built(tmp_path_factory, zygote):
    """One child's build into a fresh cache: (cache folder, its result).  Tests that start
    from a whole entry copy it (each child process costs seconds of imports)."""
    root = tmp_path_factory.mktemp("built")
    return root / "cache", _run(zygote, root, root / "cache", "build")


def _copy(built, tmp_path) -> tuple[Path, torch.Tensor]:
    """A private copy of the built cache, and the result its build gave."""
    cache = tmp_path / "cache"
    shutil.copytree(built[0], cache)
    return cache, built[1]


def test_second_process_loads_without_compiling(tmp_path, built, zygote):
    cache, first = _copy(built, tmp_path)
    entries = sorted(p.name for p in cache.iterdir())
    assert any(n.endswith(".so") for n in entries) and any(n.endswith(".json") for n in entries)
    second = _run(zygote, tmp_path, cache, "forbid-compile")
    torch.testing.assert_close(first, second)


def test_entries_are_readable_and_keyed_by_what_they_depend_on(tmp_path, built):
    cache, _ = _copy(built, tmp_path)
    (meta_path,) = cache.glob("*.json")
    meta = json.loads(meta_path.read_text())["key"]
    assert meta["spec"]["op"] == "ps_roi_pool" and meta["spec"]["pooled_height"] == 3
    assert {"target", "schedule", "tvm", "source"} <= set(meta)
    assert meta_path.with_suffix(".so").exists()


def test_corrupted_entry_is_rebuilt(tmp_path, built, zygote):
    cache, first = _copy(built, tmp_path)
    (library,) = cache.glob("*.so")
    size = library.stat().st_size
    library.write_bytes(library.read_bytes()[:size // 2])  # truncated: loading it would SIGBUS
    stderr = []
    again = _run(zygote, tmp_path, cache, "build", stderr)
    torch.testing.assert_close(first, again)
    assert Path(library).stat().st_size > size // 2
    assert stderr[0].count("discarding unreadable cache entry") == 1  # reported once
    _run(zygote, tmp_path, cache, "forbid-compile")  # and the rebuilt entry is whole


def test_concurrent_builds_leave_one_valid_entry(tmp_path, zygote):
    """Two processes compiling the same kernel at once: atomic renames leave one whole entry."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    waiting = textwrap.dedent(f"""
        import os, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
    """)
    env = {**os.environ, "ROIGEN_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", waiting + SCRIPT, "build", str(tmp_path / f"{i}.pt")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    go.touch()
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    names = sorted(p.name for p in cache.iterdir())
    assert [n for n in names if n.endswith(".so")] and len([n for n in names if n.endswith(".so")]) == 1
    assert not _hidden(cache), names  # no temporary files left behind
    torch.testing.assert_close(torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt"))
    torch.testing.assert_close(_run(zygote, tmp_path, cache, "forbid-compile"), torch.load(tmp_path / "0.pt"))


def test_a_library_swapped_for_another_entrys_is_rebuilt(tmp_path, built, zygote):
    """The file name proves nothing: scale 0.5's library under scale 1.0's name is caught by
    the record's sha256, reported once, and rebuilt; the result is scale 1.0's."""
    cache, first = _copy(built, tmp_path)  # scale 1.0
    half = _run(zygote, tmp_path, cache, "build", scale=0.5)
    assert not torch.allclose(first, half)
    entries = _entries(cache)
    entries[1.0].write_bytes(entries[0.5].read_bytes())
    stderr = []
    torch.testing.assert_close(_run(zygote, tmp_path, cache, "build", stderr, scale=1.0), first)
    assert stderr[0].count("discarding unreadable cache entry") == 1
    _run(zygote, tmp_path, cache, "forbid-compile", scale=1.0)  # the rebuilt entry verifies


def test_foreign_libraries_are_rebuilt_not_loaded(tmp_path, built, zygote):
    """Another op's TVM library, or a library that is not TVM's at all: rebuilt, once."""
    import ctypes.util

    from roigen import cache as kernel_cache
    from roigen.build import ensure_built
    from roigen.specs import RoIPoolSpec

    cache, first = _copy(built, tmp_path)
    (library,) = cache.glob("*.so")
    foreign = Path(ctypes.util.find_library("m") or "libm.so.6")
    foreign = foreign if foreign.is_absolute() else Path("/lib/x86_64-linux-gnu") / foreign
    name, _ = ensure_built(RoIPoolSpec(spatial_scale=1.0, pooled_height=2, pooled_width=2), "host")
    for impostor in (kernel_cache.path(name, ".so"), foreign):
        library.write_bytes(impostor.read_bytes())
        stderr = []
        torch.testing.assert_close(_run(zygote, tmp_path, cache, "build", stderr), first)
        assert stderr[0].count("discarding unreadable cache entry") == 1, stderr[0]


@pytest.mark.parametrize("step", ["kill-compiling", "kill-writing-library", "kill-before-record",
                                  "kill-writing-record"])
def test_a_build_killed_at_any_step_leaves_a_cache_that_recovers(tmp_path, step, zygote):
    cache = tmp_path / "cache"
    # -9 proves the patched step was reached: a kill point the build no longer passes fails here.
    assert _run(zygote, tmp_path, cache, step, check=False) == -9
    stderr = []
    out = _run(zygote, tmp_path, cache, "build", stderr)
    assert not _hidden(cache), sorted(p.name for p in cache.iterdir())  # the dead build's temporaries
    assert len(list(cache.glob("*.json"))) == 1 and len(list(cache.glob("*.so"))) == 1
    torch.testing.assert_close(_run(zygote, tmp_path, cache, "forbid-compile"), out)


@pytest.mark.parametrize("unusable", ["a-file", "/proc/roigen-cache"])
def test_an_unwritable_cache_falls_back_with_one_warning(tmp_path, unusable, built, zygote):
    cache = tmp_path / unusable if not unusable.startswith("/") else Path(unusable)
    if unusable == "a-file":
        cache.write_text("not a folder")
    stderr = []
    out = _run(zygote, tmp_path, cache, "build", stderr)
    assert stderr[0].count("cannot write the kernel cache") == 1, stderr[0]
    torch.testing.assert_close(out, built[1])  # what a usable cache's build gives


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_falls_back_with_one_warning(tmp_path, zygote):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    stderr = []
    _run(zygote, tmp_path, cache, "build", stderr)
    assert stderr[0].count("cannot write the kernel cache") == 1


def _roigen_imports(path: Path, package_root: Path) -> set[Path]:
    """The files of roigen (and its top-level `schedules`) that `path` imports, relative
    imports resolved: a module, or a package's __init__.py."""
    module = list(path.relative_to(package_root).with_suffix("").parts)
    package = module[:-1] if path.name != "__init__.py" else module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level else []
            names = [base + (node.module.split(".") if node.module else [])]
            names += [names[0] + [alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for name in names:
            if name[:1] not in (["roigen"], ["schedules"]):
                continue
            stem = package_root.joinpath(*name)
            for candidate in (stem / "__init__.py", stem.with_suffix(".py")):
                if candidate.is_file():
                    found.add(candidate.resolve())
    return found


def test_the_cache_key_covers_every_module_that_generates_kernels():
    """A cached kernel is rebuilt when anything it was generated from changes: every roigen
    module the generator's code imports, at any depth, is hashed into the key, unless it
    only calls kernels (build.RUNTIME_ONLY)."""
    import roigen
    from roigen.build import RUNTIME_ONLY, generator_files

    package_root = Path(roigen.__file__).parent.parent
    hashed = {path.resolve() for path in generator_files()}
    runtime = {(Path(roigen.__file__).parent / name).resolve() for name in RUNTIME_ONLY}
    assert (Path(roigen.__file__).parent / "limits.py").resolve() in hashed  # sizes the kernels' tables
    missing, todo, seen = set(), list(hashed), set(hashed)
    while todo:
        for imported in _roigen_imports(todo.pop(), package_root):
            if imported in seen or imported in runtime:
                continue
            seen.add(imported)
            todo.append(imported)
            if imported not in hashed:
                missing.add(str(imported.relative_to(package_root)))
    assert not missing, f"imported by the kernel generator but not in its cache key: {sorted(missing)}"
