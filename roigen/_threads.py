"""TVM's CPU thread pool size, set before TVM starts it."""

import os


def use_all_cores() -> None:
    """TVM sizes its CPU pool to half the cores on x86 (assuming hyper-threads); on
    small machines that is one thread.  Use every core we may run on unless the
    user chose otherwise (TVM_NUM_THREADS)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("TVM_NUM_THREADS", str(cores or 1))
