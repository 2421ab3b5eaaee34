"""roigen: RoI feature-extraction kernels generated with Apache TVM, loaded into PyTorch."""

import os as _os

# TVM sizes its CPU pool to half the cores on x86 (assuming hyper-threads);
# on small machines that is one thread.  Use every core we may run on unless
# the user chose otherwise.  Must happen before TVM starts its pool.
_cores = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else _os.cpu_count()
_os.environ.setdefault("TVM_NUM_THREADS", str(_cores or 1))

__version__ = "0.1.0"
