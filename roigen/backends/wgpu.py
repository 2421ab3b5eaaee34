"""The `wgpu` runtime: TVM's WebGPU codegen emits WGSL, and the `wgpu` package runs it on Vulkan.

TVM's own WebGPU runtime lives in JavaScript (tvmjs), so the host side is
here: for each kernel the build keeps its WGSL, the names of its buffer
parameters and shape variables, and its grid size as a TIR expression of
those variables (`artifact`); `VulkanModule` binds torch tensors by name,
fills the uniform block of scalars as TVM's web runtime does, and dispatches.

PyTorch has no Vulkan tensors to share, so every call stages its tensors
through host memory: inputs are uploaded, and the buffers a kernel writes are
read back into the caller's tensors.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import re

import torch

from .base import Backend, Compiled
from .gpu_kernels import GpuKernels

# Buffer declarations and the uniform block of scalars, as TVM's codegen writes them.
_BINDING = re.compile(r"@binding\((\d+)\) var<(storage, read|storage, read_write|uniform)> (\w+)")
_POD_STRUCT = re.compile(r"struct PODArgs \{(.*?)\}", re.S)
_POD_FIELD = re.compile(r"(\w+): (i32|u32|f32)")
_WORKGROUP = re.compile(r"@workgroup_size\((\d+)")
_SECTION = re.compile(r"^// Function: (\w+)\n//-+\n", re.M)
# WebGPU caps each dispatch dimension at 65535 workgroups; TVM's codegen folds
# a larger x into z and reads the true count from packGridDimX.
_MAX_GROUPS = 65535


class VulkanUnavailable(RuntimeError):
    pass


def _sections(source: str) -> dict[str, str]:
    """The WGSL of each entry point (TVM prints every kernel after a header, twice)."""
    parts = _SECTION.split(source)
    found = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if body.strip():
            found[name] = body
    return found


def _grid_extent(func) -> str:
    """The blockIdx.x extent of a GPU kernel (its first statement launches it), as integer
    arithmetic text."""
    launch = func.body
    if getattr(launch, "attr_key", None) != "thread_extent" or launch.node.thread_tag != "blockIdx.x":
        raise ValueError("a Vulkan kernel must launch blockIdx.x first (compute.gpu._threads.launch)")
    text = str(launch.value)
    _Grid(text)  # refuse at build time what the launcher could not evaluate
    return text


def artifact(executable, funcs: dict) -> dict:
    """What running the compiled kernels needs, as JSON-able data: per kernel its WGSL,
    parameters (buffer name and the shape variable of each dimension) and grid."""
    sections = _sections(executable.mod.imports[0].inspect_source())
    kernels = {}
    for name, func in funcs.items():
        params = []
        for buf in func.params:  # TVM 0.27: parameters are the buffers themselves
            dims = {str(d.name): i for i, d in enumerate(buf.shape) if not isinstance(d, int) and hasattr(d, "name")}
            params.append({"binding": f"{buf.name}_ptr", "dims": dims})  # the codegen's naming
        wgsl = sections[f"{name}_kernel"]
        kernels[name] = {"entry": f"{name}_kernel", "wgsl": wgsl, "params": params,
                         "grid": _grid_extent(func),
                         "threads": int(_WORKGROUP.search(wgsl).group(1))}
    return {"kernels": kernels}


@functools.cache
def device():
    """The wgpu device (the first Vulkan adapter, preferring a discrete GPU)."""
    try:
        import wgpu
    except ImportError as err:
        raise VulkanUnavailable("target 'vulkan' needs the wgpu package (pip install wgpu)") from err
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as err:  # wgpu raises when no driver or adapter exists
        adapter, cause = None, err
    else:
        cause = None
    if adapter is None:
        raise VulkanUnavailable(
            "target 'vulkan': no Vulkan device found (install a Vulkan driver; Mesa's CPU driver is "
            f"Debian's mesa-vulkan-drivers){': ' + str(cause) if cause else ''}")
    return adapter.request_device_sync()


def adapter_info() -> dict:
    return dict(device().adapter.info)


class _Grid:
    """A kernel's workgroup count: integer arithmetic over its shape variables, as TVM prints it."""

    _OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
            ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}

    def __init__(self, text: str):
        self.tree = ast.parse(text, mode="eval").body
        self._check(self.tree)

    def _check(self, node) -> None:
        if isinstance(node, ast.BinOp) and type(node.op) in self._OPS:
            self._check(node.left)
            self._check(node.right)
        elif not (isinstance(node, ast.Name) or (isinstance(node, ast.Constant) and isinstance(node.value, int))):
            raise ValueError(f"grid expression has an unsupported term: {ast.unparse(node)}")

    def _eval(self, node, values):
        if isinstance(node, ast.BinOp):
            return self._OPS[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        return values[node.id] if isinstance(node, ast.Name) else node.value

    def __call__(self, values: dict[str, int]) -> int:
        return self._eval(self.tree, values)


class _Kernel:
    def __init__(self, dev, info: dict):
        import wgpu

        self.dev = dev
        self.info = info
        wgsl = info["wgsl"]
        self.bindings = {name: (int(slot), access) for slot, access, name in _BINDING.findall(wgsl)}
        pod = _POD_STRUCT.search(wgsl)
        self.pod_fields = _POD_FIELD.findall(pod.group(1)) if pod else []
        self.grid = _Grid(info["grid"])
        module = dev.create_shader_module(code=wgsl)
        self.pipeline = dev.create_compute_pipeline(layout="auto",
                                                    compute={"module": module, "entry_point": info["entry"]})
        self._usage = wgpu.BufferUsage

    def _buffer(self, tensor: torch.Tensor):
        # (A one-element tensor can be "contiguous" with stride 0, e.g. an expanded gradient,
        # which a byte view refuses: clone it to real strides.)
        flat = tensor.reshape(-1)
        flat = flat if flat.stride(0) == 1 else flat.clone(memory_format=torch.contiguous_format)
        data = flat.view(torch.uint8).numpy() if tensor.numel() else bytes(4)
        usage = self._usage.STORAGE | self._usage.COPY_SRC | self._usage.COPY_DST
        return self.dev.create_buffer_with_data(data=data, usage=usage)

    def __call__(self, *tensors: torch.Tensor) -> None:
        params = self.info["params"]
        if len(tensors) != len(params):
            raise TypeError(f"{self.info['entry']} takes {len(params)} tensors, got {len(tensors)}")
        values: dict[str, int] = {}
        for param, tensor in zip(params, tensors):
            for name, dim in param["dims"].items():
                values[name] = tensor.shape[dim]
        blocks = self.grid(values)
        if blocks == 0:
            return
        entries, written = [], []
        for param, tensor in zip(params, tensors):
            if param["binding"] not in self.bindings:  # unused by the kernel: optimised away
                continue
            slot, access = self.bindings[param["binding"]]
            buf = self._buffer(tensor)
            entries.append({"binding": slot, "resource": {"buffer": buf}})
            if access.endswith("read_write") and tensor.numel():
                written.append((tensor, buf))
        entries.append({"binding": self.bindings["podArgs"][0], "resource": {"buffer": self._pods(values, blocks)}})
        groups_x, groups_z = blocks, 1
        while groups_x > _MAX_GROUPS:  # as TVM's web runtime: halve x, double z
            groups_x, groups_z = (groups_x + 1) // 2, groups_z * 2
        encoder = self.dev.create_command_encoder()
        compute = encoder.begin_compute_pass()
        compute.set_pipeline(self.pipeline)
        compute.set_bind_group(0, self.dev.create_bind_group(layout=self.pipeline.get_bind_group_layout(0),
                                                             entries=entries))
        compute.dispatch_workgroups(groups_x, 1, groups_z)
        compute.end()
        self.dev.queue.submit([encoder.finish()])
        for tensor, buf in written:
            host = torch.frombuffer(bytearray(self.dev.queue.read_buffer(buf)), dtype=tensor.dtype)
            tensor.copy_(host[: tensor.numel()].view(tensor.shape))

    def _pods(self, values: dict[str, int], blocks: int):
        words = []
        for name, _type in self.pod_fields:
            if name == "packGridDimX":
                words.append(blocks)
            elif name in values:
                words.append(values[name])
            else:
                raise RuntimeError(f"{self.info['entry']}: no value for the kernel's scalar {name!r}")
        size = max(16, math.ceil(4 * len(words) / 16) * 16)  # uniform blocks are 16-byte aligned
        data = torch.zeros(size // 4, dtype=torch.int32)
        data[: len(words)] = torch.tensor(words, dtype=torch.int64).to(torch.int32)
        return self.dev.create_buffer_with_data(data=data.numpy(), usage=self._usage.UNIFORM)


class VulkanModule:
    """The kernels of one build, compiled into pipelines on first use."""

    def __init__(self, data: dict):
        self._info = data["kernels"]
        self._kernels: dict[str, _Kernel] = {}

    def implements(self, name: str) -> bool:
        return name in self._info

    def __getitem__(self, name: str) -> _Kernel:
        if name not in self._kernels:
            self._kernels[name] = _Kernel(device(), self._info[name])
        return self._kernels[name]


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True)


class VulkanLauncher:
    def __init__(self, module, prefix: str = ""):
        self.module = module
        self.prefix = prefix

    def implements(self, name: str) -> bool:
        return self.module.implements(self.prefix + name)

    def __call__(self, name: str, *tensors: torch.Tensor) -> None:
        self.module[self.prefix + name](*tensors)


class WgpuBackend(Backend):
    name = "wgpu"
    device_type = "cpu"  # PyTorch has no Vulkan tensors: kernels take CPU tensors and stage them
    device_kind = "vulkan-adapter"
    artifact = ".wgsl.json"  # the launch data: there is no host library
    builds_library = False

    def layout(self, spec_cls, channels_last: bool) -> str:
        return "NHWC"  # the GPU computes read NHWC whatever the input's layout (the kernels convert)

    def check_spec(self, spec, target) -> None:
        if spec.compute_dtype == "float64":
            raise TypeError(f"input dtype float64 is not supported on target {target.name!r}: "
                            "WGSL has no 64-bit floats; pass float32 (or a half type)")

    def compile(self, funcs: dict, target, sched) -> Compiled:
        from ..lower import compile_gpu

        # Without CSE every scalar a kernel reads is a shape variable the
        # Vulkan launcher can name (CSE hoists host-computed temporaries).
        executable = compile_gpu(funcs, target, {"tirx.disable_cse_tir": True})
        return Compiled(executable, {self.artifact: dumps(artifact(executable, funcs))})

    def sources(self, compiled: Compiled) -> dict:
        return {"kernels.wgsl": compiled.executable.mod.imports[0].inspect_source()}

    def load(self, spec, params: dict, file, prefix: str = ""):
        path = file(self.artifact)
        stat = path.stat()
        return GpuKernels(spec, VulkanLauncher(_module(str(path), stat.st_mtime_ns, stat.st_size), prefix))

    def device_name(self) -> str:
        return adapter_info().get("device", "")


@functools.lru_cache(maxsize=64)
def _module(path: str, _mtime_ns: int, _size: int) -> VulkanModule:
    """One module per artifact file as it is now (a package's specs share one, and so its
    compiled pipelines)."""
    from pathlib import Path

    return VulkanModule(json.loads(Path(path).read_text()))


BACKEND = WgpuBackend()
