"""The threads that run CPU kernels: TVM's pool size, and one shared caller thread.

TVM's CPU thread pool belongs to the thread that calls a kernel, and its
workers outlive that thread: every short-lived Python thread that ran a kernel
left TVM_NUM_THREADS OS threads behind (60 threads, 120 leaked).  So kernels
called from any thread but the main one run on one long-lived caller thread,
whose pool every such call shares; the main thread, which lives as long as
the process, keeps calling directly (no hand-off on the common path).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


def use_all_cores() -> None:
    """TVM sizes its CPU pool to half the cores on x86 (assuming hyper-threads); on
    small machines that is one thread.  Use every core we may run on unless the
    user chose otherwise (TVM_NUM_THREADS)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(usable_cores()))


def usable_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def pool_threads() -> int:
    """Threads that may run a CPU kernel's tasks, each holding its own scratch: torch's
    (roigen.native points the kernels there), or TVM's pool where that could not be done."""
    import torch

    try:
        tvm = max(1, int(os.environ.get("TVM_NUM_THREADS", "")))
    except ValueError:
        tvm = usable_cores()
    return max(tvm, torch.get_num_threads())


_lock = threading.Lock()
_caller: ThreadPoolExecutor | None = None


def _forget_after_fork() -> None:
    # A forked child has the executor object but not its thread.
    global _caller
    _caller = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def run_in_kernel_thread(fn, *args):
    """`fn(*args)` on the main thread if called there, else on the shared caller thread."""
    global _caller
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    with _lock:
        if _caller is None:
            _caller = ThreadPoolExecutor(1, thread_name_prefix="roigen-kernels")
        caller = _caller
    return caller.submit(fn, *args).result()
