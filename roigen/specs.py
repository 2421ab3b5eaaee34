"""Declarative op specs: each RoI op's parameters, validated once, frozen.

A spec is the single source of an op's facts.  The TIR computes
(`roigen/compute/{cpu,gpu}/<op>.py`), the PyTorch schema and fake kernel
(`roigen.ops`), the kernel-cache key (`roigen.build`) and the tests'
parametrisation all read it.  Adding an op is five files: its spec here, its
CPU and GPU computes, its reference, its `roigen/ops/<op>.py`
(docs/ARCHITECTURE.md); the plumbing is generic.

Fields marked ``op_param`` become arguments of the ``torch.ops.roigen.*``
schema, in declaration order; ``dtype`` and ``layout`` come from the input
tensor instead.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

# The dtype a kernel computes in: half types load as float32 and accumulate there.
COMPUTE_DTYPE = {
    "float32": "float32",
    "float64": "float64",
    "float16": "float32",
    "bfloat16": "float32",
}
# Memory formats an input may arrive in: contiguous NCHW, or channels_last (NHWC).
LAYOUTS = ("NCHW", "NHWC")
# The largest output side, SPP level and sampling_ratio.  Kernels index with int32
# on GPUs, where a bin's samples along one axis (pooled * grid) must stay below
# 2**31; and TVM's compiler needed 8.7 GB for one 32768 x 32768 grid (16384: 0.9 GB).
MAX_SIDE = 1 << 14
# The largest finite value of each compute dtype (a parameter is a kernel literal).
_FINITE_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}

_SCHEMA_TYPES = {int: "int", float: "float", bool: "bool", str: "str", tuple: "int[]"}


def op_param(default=dataclasses.MISSING, *, py_type):
    """A spec field that is also an argument of the op's PyTorch schema."""
    return field(default=default, metadata={"schema": _SCHEMA_TYPES[py_type], "py_type": py_type})


def output_size_pair(output_size) -> tuple[int, int]:
    """torchvision's `output_size`: an int or a pair of ints, each > 0."""
    if isinstance(output_size, bool):
        raise TypeError(f"output_size must be an int or a pair of ints, got {output_size!r}")
    if isinstance(output_size, int):
        pair = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        pair = tuple(output_size)
    else:
        raise TypeError(f"output_size must be an int or a pair of ints, got {output_size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"output_size must hold ints, got {output_size!r}")
    if min(pair) <= 0 or max(pair) > MAX_SIDE:
        raise ValueError(f"output_size must lie in [1, {MAX_SIDE}], got {output_size!r}")
    return pair


@dataclass(frozen=True)
class OpSpec:
    """Base of every op spec.  Subclasses add `op_param` fields and `validate`."""

    name: ClassVar[str]
    # Whether the op samples boxes (an `rois` argument) or the whole map.
    takes_boxes: ClassVar[bool] = True
    # Whether kernels read the map in channel blocks (packed by the layout
    # kernels) or straight from contiguous NCHW.
    packed: ClassVar[bool] = True
    # Columns of a box row: (batch, x1, y1, x2, y2), or (batch, cx, cy, w, h, angle) for rotated boxes.
    box_columns: ClassVar[int] = 5
    # Per-box parameters that follow the box in each row, per bin of the output grid
    # (deform_roi_pool's x and y offsets: 2); see `row_columns`.
    columns_per_bin: ClassVar[int] = 0
    # Whether the op is differentiable in its boxes: its kernels include `backward_boxes`.
    box_gradient: ClassVar[bool] = False
    # Whether the CPU's sample tables keep each sample's corners where they fit (limits.py):
    # ops whose samples are not a row sample times a column sample.
    per_sample_tables: ClassVar[bool] = False

    dtype: str = field(default="float32", kw_only=True)
    layout: str = field(default="NCHW", kw_only=True)

    def __post_init__(self):
        if self.dtype not in COMPUTE_DTYPE:
            raise TypeError(f"input dtype must be one of {sorted(COMPUTE_DTYPE)}, got {self.dtype}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for f in self.op_fields():
            value = getattr(self, f.name)
            want = f.metadata["py_type"]
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                ok = True
            if want is tuple and isinstance(value, list):  # int[] arrives as a list from the schema
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if want is tuple:
                ok = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not ok:
                raise TypeError(f"{f.name} must be {want.__name__}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the argument when a parameter is out of range."""

    @classmethod
    def op_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if "schema" in f.metadata]

    @property
    def op_params(self) -> tuple:
        return tuple(getattr(self, f.name) for f in self.op_fields())

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        """Extra int32 outputs of the forward kernel that the backward reads
        (RoIPool's argmax), each with the output's shape."""
        return ()

    @property
    def compute_dtype(self) -> str:
        return COMPUTE_DTYPE[self.dtype]

    @property
    def pooled_size(self) -> tuple[int, int]:
        return (self.pooled_height, self.pooled_width)

    def check_input_shape(self, shape) -> None:
        """Raise ValueError if the op cannot take an input of this (N, C, H, W) shape."""

    @property
    def nonnegative_box_columns(self) -> tuple[int, ...]:
        """Box columns whose negative values the op refuses (a rotated box's sizes)."""
        return ()

    @classmethod
    def columns_of(cls, params: dict) -> int:
        """Columns of a rois row for these op parameters: the box's, then its per-bin parameters."""
        if not cls.columns_per_bin:
            return cls.box_columns
        return cls.box_columns + cls.columns_per_bin * params["pooled_height"] * params["pooled_width"]

    @property
    def row_columns(self) -> int:
        """Columns of a rois row as the kernels take it (`columns_of`)."""
        return self.columns_of({f.name: getattr(self, f.name) for f in self.op_fields()})

    def kernel_spec(self) -> OpSpec:
        """The spec the compiled kernel depends on: half types share the float32 kernel."""
        return dataclasses.replace(self, dtype=self.compute_dtype)

    def output_shape(self, input_shape, num_boxes) -> tuple:
        _, channels, _, _ = input_shape
        return (num_boxes, channels, self.pooled_height, self.pooled_width)

    def kernel_output_shape(self, input_shape, num_boxes) -> tuple:
        """The output as the kernel writes it: (K, C, PH*PW) for pooled grids."""
        k, c, ph, pw = self.output_shape(input_shape, num_boxes)
        return (k, c, ph * pw)

    def key(self) -> str:
        """Stable text identity, used in cache keys and manifests."""
        return json.dumps({"op": self.name, **dataclasses.asdict(self)}, sort_keys=True)


def _check_scale(spec: OpSpec) -> None:
    scale, largest = spec.spatial_scale, _FINITE_MAX[spec.compute_dtype]
    if not (0 < scale <= largest):  # NaN fails too
        raise ValueError(f"spatial_scale must be a number in (0, {largest:.4g}] (the {spec.compute_dtype} "
                         f"kernels' range), got {scale}")


def _check_pooled(spec: OpSpec) -> None:
    if not all(1 <= v <= MAX_SIDE for v in spec.pooled_size):
        raise ValueError(f"output_size must lie in [1, {MAX_SIDE}], got {spec.pooled_size}")


def _check_sampling(spec: OpSpec) -> None:
    if not (-(1 << 31) <= spec.sampling_ratio <= MAX_SIDE):
        raise ValueError(f"sampling_ratio must lie in [-2**31, {MAX_SIDE}] (samples per bin along each axis; "
                         f"<= 0 chooses them per box), got {spec.sampling_ratio}")


def _check_mode(spec: OpSpec) -> None:
    if spec.mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {spec.mode!r}")


def _check_levels(levels: tuple) -> None:
    if not levels or min(levels) <= 0 or max(levels) > MAX_SIDE:
        raise ValueError(f"levels must be a non-empty sequence of ints in [1, {MAX_SIDE}], got {levels}")


@dataclass(frozen=True)
class _GridSpec(OpSpec):
    """Ops that pool each box, at a spatial scale, into a PH x PW grid of bins."""

    spatial_scale: float = op_param(py_type=float)
    pooled_height: int = op_param(py_type=int)
    pooled_width: int = op_param(py_type=int)

    def validate(self) -> None:
        _check_scale(self)
        _check_pooled(self)


@dataclass(frozen=True)
class _SampledGridSpec(_GridSpec):
    """Grid ops that average (or max) bilinear samples of each bin: `sampling_ratio` per axis."""

    sampling_ratio: int = op_param(-1, py_type=int)

    def validate(self) -> None:
        super().validate()
        _check_sampling(self)


class _SampleMaxMixin:
    """`mode="max"` routes each gradient to its bin's winning sample, kept as argmax."""

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        return ("argmax",) if self.mode == "max" else ()


@dataclass(frozen=True)
class RoIAlignSpec(_SampleMaxMixin, _SampledGridSpec):
    """Mask R-CNN's RoIAlign (torchvision.ops.roi_align; `mode="max"` as mmcv)."""

    name: ClassVar[str] = "roi_align"
    box_gradient: ClassVar[bool] = True

    aligned: bool = op_param(False, py_type=bool)
    mode: str = op_param("avg", py_type=str)

    def validate(self) -> None:
        super().validate()
        _check_mode(self)


@dataclass(frozen=True)
class RoIPoolSpec(_GridSpec):
    """Fast R-CNN's RoIPool (torchvision.ops.roi_pool)."""

    name: ClassVar[str] = "roi_pool"

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        return ("argmax",)

    def kernel_output_shape(self, input_shape, num_boxes) -> tuple:
        # One level of the pool family's pyramid layout (compute/cpu/_pool.py).
        k, c, ph, pw = self.output_shape(input_shape, num_boxes)
        return (k, c * ph * pw)


@dataclass(frozen=True)
class RoIWarpSpec(_SampleMaxMixin, _SampledGridSpec):
    """MNC's RoIWarp: RoIAlign on the box snapped to the feature-map grid."""

    name: ClassVar[str] = "roi_warp"

    mode: str = op_param("avg", py_type=str)

    def validate(self) -> None:
        super().validate()
        _check_mode(self)


class _PyramidMixin:
    """Ops whose output is a pyramid of n x n grids, flattened channel-major per level."""

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        return tuple((n, n) for n in self.levels)

    @property
    def bins(self) -> int:
        return sum(n * n for n in self.levels)

    def output_shape(self, input_shape, num_rows) -> tuple:
        return (num_rows, input_shape[1] * self.bins)

    def kernel_output_shape(self, input_shape, num_rows) -> tuple:
        return self.output_shape(input_shape, num_rows)


@dataclass(frozen=True)
class RoISPPSpec(_PyramidMixin, OpSpec):
    """SPPnet pooling inside boxes: RoIPool grids of every level, in one pass per box."""

    name: ClassVar[str] = "roi_spp"

    spatial_scale: float = op_param(py_type=float)
    levels: tuple = op_param((4, 2, 1), py_type=tuple)

    def validate(self) -> None:
        _check_scale(self)
        _check_levels(self.levels)

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        return ("argmax",)


@dataclass(frozen=True)
class SPPSpec(_PyramidMixin, OpSpec):
    """SPPnet spatial pyramid pooling over the whole map (adaptive n x n bins)."""

    name: ClassVar[str] = "spp"
    takes_boxes: ClassVar[bool] = False

    levels: tuple = op_param((4, 2, 1), py_type=tuple)
    mode: str = op_param("max", py_type=str)

    def validate(self) -> None:
        _check_levels(self.levels)
        _check_mode(self)

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        return ("argmax",) if self.mode == "max" else ()

    def output_shape(self, input_shape, num_rows) -> tuple:
        return (input_shape[0], input_shape[1] * self.bins)


class _PositionSensitiveMixin:
    """R-FCN: input channels C_out*PH*PW; bin (ph, pw) of channel c reads channel (c*PH + ph)*PW + pw."""

    packed: ClassVar[bool] = False

    def check_input_shape(self, shape) -> None:
        bins = self.pooled_height * self.pooled_width
        if shape[1] % bins:
            raise ValueError(f"input channels ({shape[1]}) must be a multiple of output_size's "
                             f"PH*PW = {bins} for position-sensitive pooling")

    def output_shape(self, input_shape, num_boxes) -> tuple:
        return (num_boxes, input_shape[1] // (self.pooled_height * self.pooled_width),
                self.pooled_height, self.pooled_width)


@dataclass(frozen=True)
class PSRoIAlignSpec(_PositionSensitiveMixin, _SampledGridSpec):
    """R-FCN's position-sensitive RoIAlign (torchvision.ops.ps_roi_align)."""

    name: ClassVar[str] = "ps_roi_align"


@dataclass(frozen=True)
class PSRoIPoolSpec(_PositionSensitiveMixin, _GridSpec):
    """R-FCN's position-sensitive RoIPool, an average (torchvision.ops.ps_roi_pool)."""

    name: ClassVar[str] = "ps_roi_pool"


ANGLE_UNITS = ("deg", "rad")


@dataclass(frozen=True)
class RoIAlignRotatedSpec(_SampledGridSpec):
    """RoIAlign in rotated boxes (detectron2's ROIAlignRotated; mmcv's roi_align_rotated with
    angle_unit="rad").  Boxes are (batch, cx, cy, w, h, angle), angle counter-clockwise
    unless `clockwise`."""

    name: ClassVar[str] = "roi_align_rotated"
    box_columns: ClassVar[int] = 6
    box_gradient: ClassVar[bool] = True
    per_sample_tables: ClassVar[bool] = True

    aligned: bool = op_param(True, py_type=bool)
    angle_unit: str = op_param("deg", py_type=str)
    clockwise: bool = op_param(False, py_type=bool)

    def validate(self) -> None:
        super().validate()
        if self.angle_unit not in ANGLE_UNITS:
            raise ValueError(f"angle_unit must be one of {ANGLE_UNITS}, got {self.angle_unit!r}")

    @property
    def nonnegative_box_columns(self) -> tuple[int, ...]:
        # detectron2 and mmcv assert w, h >= 0 when aligned; unaligned boxes clamp to 1x1.
        return (3, 4) if self.aligned else ()


@dataclass(frozen=True)
class PrRoIPoolSpec(_GridSpec):
    """IoU-Net's Precise RoI Pooling (mmcv's prroi_pool): each bin's exact mean of the
    bilinear surface, which is 0 outside the map."""

    name: ClassVar[str] = "prroi_pool"
    box_gradient: ClassVar[bool] = True


@dataclass(frozen=True)
class DeformRoIPoolSpec(_SampledGridSpec):
    """Deformable RoI pooling (mmcv's deform_roi_pool): aligned RoIAlign whose bins are shifted
    by learned offsets.  A rois row is (batch, x1, y1, x2, y2) then the box's offsets, x for
    every bin (row-major) then y: `offset[k].flatten()` of mmcv's (K, 2, PH, PW)."""

    name: ClassVar[str] = "deform_roi_pool"
    columns_per_bin: ClassVar[int] = 2
    box_gradient: ClassVar[bool] = True
    per_sample_tables: ClassVar[bool] = True

    sampling_ratio: int = op_param(0, py_type=int)
    gamma: float = op_param(0.1, py_type=float)

    def validate(self) -> None:
        super().validate()
        largest = _FINITE_MAX[self.compute_dtype]
        if not abs(self.gamma) <= largest:  # NaN fails too
            raise ValueError(f"gamma must be a finite number (the {self.compute_dtype} kernels' range), "
                             f"got {self.gamma}")


SPECS: dict[str, type[OpSpec]] = {
    cls.name: cls
    for cls in (RoIAlignSpec, RoIPoolSpec, RoIWarpSpec, RoISPPSpec, SPPSpec, PSRoIAlignSpec, PSRoIPoolSpec,
                RoIAlignRotatedSpec, PrRoIPoolSpec, DeformRoIPoolSpec)
}
