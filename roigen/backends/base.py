"""The interface every runtime's backend implements.

A build goes through a backend four times: `compile` (named PrimFuncs →
executable and files), the cache or a package storing what `library` and
`files` give, `load` (those files → kernels), and the ops calling the kernels.
Kernels of every backend take the same calls:

    forward(x, rois, keep_aux=True, out=None, aux=None) -> (output, aux)
    backward(grad, rois, aux, input_shape, deterministic=False, grad_input=None) -> d(input)
    backward_boxes(x, rois, output, aux, grad) -> d(rois)   (ops whose spec has `box_gradient`)

`x` is in the compute dtype and laid out as `layout` says; `rois` is None
for whole-map ops; `out`, `aux` and `grad_input` are memory to reuse (the
tuner passes them so that page faults on fresh outputs do not swamp what it
compares).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A cache entry or package keeps the shared library under this suffix.
LIBRARY = ".so"


@dataclass
class Compiled:
    """What compiling one module gave: TVM's executable, and files to keep by suffix."""

    executable: object
    files: dict[str, str | bytes] = field(default_factory=dict)


class Backend:
    name: str  # the `runtime` a target file names
    device_type: str  # the torch device type of the tensors its kernels take
    device_kind: str  # the default `device_key` of its targets: how tuning records name the device
    artifact: str = LIBRARY  # the file that holds the kernels (LIBRARY, or a suffix of `Compiled.files`)
    builds_library: bool = True  # whether `artifact` or another loaded file is a shared library
    # Whether roigen's C++ op library (roigen/torch_library.py) can call its kernels: host
    # code in `artifact` taking CPU tensors, with no launch data kept in Python.
    torch_library: bool = False
    # Whether its kernels skip a row whose batch index is -1 (no image): read nothing for it and
    # leave its output rows as they are.  The CPU's channel-block tasks each take the rows of
    # their own image; multi_scale_roi_align runs every level on every box this way.
    skips_rows_without_image: bool = False

    def layout(self, spec_cls, channels_last: bool) -> str:
        """The layout ("NCHW" or "NHWC") of the kernels an input in this memory format runs."""
        return "NHWC" if channels_last and spec_cls.packed else "NCHW"

    def layouts(self, spec_cls) -> tuple[str, ...]:
        """Every layout the ops may ask for (a package builds each)."""
        return tuple(dict.fromkeys(self.layout(spec_cls, c) for c in (False, True)))

    def check_spec(self, spec, target) -> None:
        """Refuse a spec the runtime cannot run (raise TypeError naming the argument)."""

    def runnable(self, target) -> bool:
        """Whether this machine can run `target`'s kernels at all (a cross target cannot)."""
        return True

    def compile(self, funcs: dict, target, sched) -> Compiled:
        raise NotImplementedError

    def library(self, compiled: Compiled, target) -> Callable[[Path], None] | None:
        """A writer of the shared library (called with its path), or None if there is none."""
        if not self.builds_library:
            return None
        return lambda path: compiled.executable.export_library(str(path), **({"cc": target.cc} if target.cc else {}))

    def sources(self, compiled: Compiled) -> dict[str, str | bytes]:
        """Files for reading that a package keeps under sources/, besides `Compiled.files`."""
        return {}

    def package_path(self, suffix: str) -> str:
        """Where a package keeps the file of this suffix: what loads at the top, the rest in sources/."""
        return f"kernels{suffix}" if suffix in (LIBRARY, self.artifact) else f"sources/kernels{suffix}"

    def load(self, spec, params: dict, file: Callable[[str], Path], prefix: str = ""):
        """The kernels of one spec: `params` are the schedule's `runtime_params()`, `file(suffix)`
        the verified path of a stored file, `prefix` the kernels' names' (a package holds many specs)."""
        raise NotImplementedError

    def device_name(self) -> str:
        """This machine's device of the backend's kind, as tuning records name it."""
        raise NotImplementedError
