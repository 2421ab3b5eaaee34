"""roigen's PyTorch ops: drop-ins for `torchvision.ops`, registered as `torch.ops.roigen.*`."""

from ..specs import SPECS
from ._registry import register

for _spec_cls in SPECS.values():
    register(_spec_cls)

from .deform_roi_pool import DeformRoIPool, DeformRoIPoolPack, ModulatedDeformRoIPoolPack, deform_roi_pool  # noqa: E402
from .multi_scale import MultiScaleRoIAlign, multi_scale_roi_align  # noqa: E402
from .prroi_pool import PrRoIPool, prroi_pool  # noqa: E402
from .ps_roi_align import PSRoIAlign, ps_roi_align  # noqa: E402
from .ps_roi_pool import PSRoIPool, ps_roi_pool  # noqa: E402
from .roi_align import RoIAlign, roi_align  # noqa: E402
from .roi_align_rotated import RoIAlignRotated, roi_align_rotated  # noqa: E402
from .roi_pool import RoIPool, roi_pool  # noqa: E402
from .roi_spp import RoISPP, roi_spp  # noqa: E402
from .roi_warp import RoIWarp, roi_warp  # noqa: E402
from .spp import SpatialPyramidPool, spp  # noqa: E402

__all__ = [
    "roi_align", "RoIAlign", "roi_pool", "RoIPool", "roi_warp", "RoIWarp",
    "spp", "SpatialPyramidPool", "roi_spp", "RoISPP",
    "ps_roi_align", "PSRoIAlign", "ps_roi_pool", "PSRoIPool",
    "multi_scale_roi_align", "MultiScaleRoIAlign", "roi_align_rotated", "RoIAlignRotated",
    "prroi_pool", "PrRoIPool",
    "deform_roi_pool", "DeformRoIPool", "DeformRoIPoolPack", "ModulatedDeformRoIPoolPack",
]
