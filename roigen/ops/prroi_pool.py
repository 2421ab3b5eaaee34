"""prroi_pool / PrRoIPool: IoU-Net's Precise RoI Pooling (mmcv's prroi_pool)."""

from __future__ import annotations

from torch import Tensor

from ..specs import PrRoIPoolSpec, output_size_pair
from ._checks import as_float
from ._module import OpModule
from ._registry import call
from ._tracing import fx_leaf


@fx_leaf
def prroi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
               *, target: str = "auto", deterministic: bool = False) -> Tensor:
    """Precise RoI Pooling: each bin's exact mean of the bilinear surface through the
    pixels (0 outside the map), no sampling.

    boxes: Tensor[K, 5] of (batch_index, x1, y1, x2, y2), or a list of Tensor[L, 4].
    A bin of zero area gives 0.  Differentiable in the input and in the boxes.
    Returns Tensor[K, C, PH, PW].
    """
    ph, pw = output_size_pair(output_size)
    return call(PrRoIPoolSpec, input, boxes, spatial_scale=as_float(spatial_scale), pooled_height=ph,
                pooled_width=pw, target=target, deterministic=deterministic)


class PrRoIPool(OpModule, function=prroi_pool):
    """Module form of `prroi_pool` (as mmcv's PrRoIPool)."""


def oracle(params: dict):
    """None: mmcv's kernel is CUDA-only; its published test vectors and ROI_OPS.md's
    avg-pool identity (tests/test_peer_vectors.py) stand in for it."""
    return None
