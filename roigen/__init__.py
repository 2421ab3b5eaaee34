"""roigen: RoI feature-extraction kernels generated with Apache TVM, loaded into PyTorch."""

from ._threads import use_all_cores as _use_all_cores

_use_all_cores()  # before TVM starts its pool

__version__ = "0.1.0"
# The torch.library namespace of the ops: torch.ops.roigen.*  (a generated
# kernel package carries a copy of the runtime with its own name here).
NAMESPACE = "roigen"
