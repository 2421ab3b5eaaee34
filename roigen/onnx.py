"""ONNX export of roigen's ops, through the exporter's documented extension point:

    torch.onnx.export(model, args, dynamo=True,
                      custom_translation_table=roigen.onnx.translations())

Each translatable op becomes standard ONNX that ONNX Runtime runs:

| op | ONNX |
|---|---|
| roi_align (avg) | RoiAlign (opset 16; aligned → half_pixel, else output_half_pixel) |
| roi_pool | MaxRoiPool |
| roi_spp | one MaxRoiPool per level, flattened and concatenated |
| spp (max) | MaxRoiPool over each whole image per level (its bins are adaptive pooling's) |
| roi_warp (avg) | the C rounding as Sign/Floor/Abs, then RoiAlign |
| multi_scale_roi_align | one RoiAlign per level on the boxes of that level, scattered back to box order |

The other ops have no faithful ONNX form and stop the export with an error that
names the op and why: roi_align and roi_warp with mode="max" (ONNX's RoiAlign
max mode takes the max of weighted corners, not of the samples), spp with
mode="avg" (no adaptive average pooling in ONNX), and ps_roi_align /
ps_roi_pool (no position-sensitive pooling in ONNX).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import FLOAT, INT64
from onnxscript import opset18 as op

from . import NAMESPACE


class UnsupportedOp(RuntimeError):
    """An op with no faithful ONNX form."""


def _empty_aux():
    # The export is of an inference graph: no aux (keep_aux is False without gradients).
    return op.Constant(value=ir.tensor(np.zeros(0, dtype=np.int32)))


def _split_rois(rois):
    """(boxes (K, 4), batch indices (K,) int64) from roigen's (K, 5) rows."""
    boxes = op.Slice(rois, op.Constant(value_ints=[1]), op.Constant(value_ints=[5]), op.Constant(value_ints=[1]))
    index = op.Cast(op.Squeeze(op.Slice(rois, op.Constant(value_ints=[0]), op.Constant(value_ints=[1]),
                                        op.Constant(value_ints=[1])), op.Constant(value_ints=[1])),
                    to=INT64.dtype)
    return boxes, index


def _refuse(name: str, why: str):
    raise UnsupportedOp(f"roigen.{name} cannot be exported to ONNX: {why}")


def _avg_only(name: str, mode: str) -> None:
    if mode != "avg":
        _refuse(name, 'mode="max" has no ONNX form (ONNX RoiAlign\'s max mode takes the max of '
                      "weighted corners, not of the bilinear samples)")


def _roi_align(boxes, index, input, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return op.RoiAlign(input, boxes, index, coordinate_transformation_mode="half_pixel" if aligned
                       else "output_half_pixel", mode="avg", output_height=pooled_height,
                       output_width=pooled_width, sampling_ratio=max(sampling_ratio, 0),
                       spatial_scale=spatial_scale)


def roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
              aligned: bool, mode: str, keep_aux: bool = True, target: str = "auto", deterministic: bool = False):
    _avg_only("roi_align", mode)
    boxes, index = _split_rois(rois)
    return _roi_align(boxes, index, input, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                      aligned), _empty_aux()


def roi_warp(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
             mode: str, keep_aux: bool = True, target: str = "auto", deterministic: bool = False):
    _avg_only("roi_warp", mode)
    boxes, index = _split_rois(rois)
    scaled = op.Mul(boxes, op.CastLike(op.Constant(value_float=spatial_scale), boxes))
    half = op.CastLike(op.Constant(value_float=0.5), boxes)
    snapped = op.Mul(op.Sign(scaled), op.Floor(op.Add(op.Abs(scaled), half)))  # C round: half away from zero
    return _roi_align(snapped, index, input, 1.0, pooled_height, pooled_width, sampling_ratio, False), _empty_aux()


def roi_pool(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, keep_aux: bool = True,
             target: str = "auto", deterministic: bool = False):
    return op.MaxRoiPool(input, rois, pooled_shape=[pooled_height, pooled_width],
                         spatial_scale=spatial_scale), _empty_aux()


def _pyramid(input, rois, spatial_scale, levels):
    flat = [op.Flatten(op.MaxRoiPool(input, rois, pooled_shape=[n, n], spatial_scale=spatial_scale), axis=1)
            for n in levels]
    return op.Concat(*flat, axis=1)


def roi_spp(input, rois, spatial_scale: float, levels: list[int], keep_aux: bool = True, target: str = "auto",
            deterministic: bool = False):
    return _pyramid(input, rois, spatial_scale, levels), _empty_aux()


def spp(input, levels: list[int], mode: str, keep_aux: bool = True, target: str = "auto",
        deterministic: bool = False):
    if mode != "max":
        _refuse("spp", 'mode="avg" has no ONNX form (ONNX has no adaptive average pooling)')
    # RoIPool of the box (0, 0, W-1, H-1) spans W x H pixels and cuts bin i at
    # floor(i*W/n), ceil((i+1)*W/n): adaptive max pooling's bins.
    shape = op.Shape(input)
    n = op.Cast(op.Slice(shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[1])), to=FLOAT.dtype)
    hw = op.Cast(op.Slice(shape, op.Constant(value_ints=[2]), op.Constant(value_ints=[4])), to=FLOAT.dtype)
    last = op.Sub(op.Concat(op.Slice(hw, op.Constant(value_ints=[1]), op.Constant(value_ints=[2])),
                            op.Slice(hw, op.Constant(value_ints=[0]), op.Constant(value_ints=[1])), axis=0),
                  op.Constant(value_float=1.0))  # (W-1, H-1)
    batch = op.Unsqueeze(op.Range(op.Constant(value_float=0.0), op.Squeeze(n), op.Constant(value_float=1.0)),
                         op.Constant(value_ints=[1]))
    zeros = op.Mul(batch, op.Constant(value_floats=[0.0, 0.0]))
    corner = op.Add(op.Mul(batch, op.Constant(value_float=0.0)), op.Unsqueeze(last, op.Constant(value_ints=[0])))
    rois = op.CastLike(op.Concat(batch, zeros, corner, axis=1), input)
    return _pyramid(input, rois, 1.0, levels), _empty_aux()


def multi_scale_roi_align(features, rois, levels, output_size: list[int], scales: list[float],
                          sampling_ratio: int, aligned: bool, target: str = "auto", deterministic: bool = False):
    boxes, index = _split_rois(rois)
    ph, pw = output_size
    shape = op.Concat(op.Slice(op.Shape(rois), op.Constant(value_ints=[0]), op.Constant(value_ints=[1])),
                      op.Slice(op.Shape(features[0]), op.Constant(value_ints=[1]), op.Constant(value_ints=[2])),
                      op.Constant(value_ints=[ph, pw]), axis=0)
    out = op.Expand(op.CastLike(op.Constant(value_float=0.0), features[0]), shape)
    for level, (feature, scale) in enumerate(zip(features, scales)):
        rows = op.Transpose(op.NonZero(op.Equal(levels, op.Constant(value_int=level))), perm=[1, 0])  # (M, 1)
        chosen = op.Squeeze(rows, op.Constant(value_ints=[1]))
        part = _roi_align(op.Gather(boxes, chosen, axis=0), op.Gather(index, chosen, axis=0), feature,
                          scale, ph, pw, sampling_ratio, aligned)
        out = op.ScatterND(out, rows, part)
    return out


def _unsupported(name: str, why: str):
    def refuse(*args, **kwargs):
        _refuse(name, why)

    return refuse


def translations() -> dict:
    """The `custom_translation_table` for torch.onnx.export(dynamo=True) of roigen's ops."""
    ops = getattr(torch.ops, NAMESPACE)
    position_sensitive = "position-sensitive pooling has no ONNX operator"
    return {
        ops.roi_align.default: roi_align,
        ops.roi_warp.default: roi_warp,
        ops.roi_pool.default: roi_pool,
        ops.roi_spp.default: roi_spp,
        ops.spp.default: spp,
        ops.multi_scale_roi_align.default: multi_scale_roi_align,
        ops.ps_roi_align.default: _unsupported("ps_roi_align", position_sensitive),
        ops.ps_roi_pool.default: _unsupported("ps_roi_pool", position_sensitive),
    }
