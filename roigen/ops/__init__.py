"""roigen's PyTorch ops: drop-ins for `torchvision.ops`, registered as `torch.ops.roigen.*`."""

from ..specs import SPECS
from ._registry import register
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

for _spec_cls in SPECS.values():
    register(_spec_cls)

__all__ = ["roi_align", "RoIAlign", "roi_pool", "RoIPool"]
