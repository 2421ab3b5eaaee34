"""A load test: thousands of mixed calls leave OS threads, file descriptors and memory flat."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

import roigen.ops as R


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settled_threads() -> int:
    """The thread count once it has held still for 0.2 s (at most 5 s): a thread that Python has
    joined can still be leaving the OS's task list, so a count taken at once can be one too many."""
    deadline = time.monotonic() + 5
    count, since = _threads(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 0.2:
        time.sleep(0.02)
        now = _threads()
        if now != count:
            count, since = now, time.monotonic()
    return count


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _calls(gen):
    x = torch.randn(2, 24, 13, 17, generator=gen)
    xs = torch.randn(2, 2 * 9, 13, 17, generator=gen)
    rois = torch.tensor([[0, 1.0, 1.0, 20.0, 18.0], [1, 5.0, 0.0, 33.0, 25.0], [0, -3.0, 4.0, 9.0, 30.0]])
    return [
        lambda: R.roi_align(x, rois, 3, 0.5, 2, True),
        lambda: R.roi_align(x.contiguous(memory_format=torch.channels_last), rois, (2, 4), 0.5, -1),
        lambda: R.roi_pool(x, rois, 2, 0.5),
        lambda: R.roi_spp(x, rois, (2, 1), 0.5),
        lambda: R.spp(x, (3, 1)),
        lambda: R.roi_warp(x, rois, 3, 0.5, 2),  # adaptive roi_warp is slow to build; roi_align has it
        lambda: R.ps_roi_align(xs, rois, 3, 0.5, 2),
        lambda: R.ps_roi_pool(xs, rois, 3, 0.5),
    ]



@pytest.mark.slow
def test_many_mixed_calls_from_short_lived_threads_leak_nothing(monkeypatch):
    from roigen.backends import llvm

    gen = torch.Generator().manual_seed(0)
    calls = _calls(gen)
    # Build every kernel and warm the allocators first, and start the thread pools: the
    # first call off the main thread starts the shared kernel-caller thread, and a thread's
    # first kernel split over the pool starts that thread's workers (kernels this small run
    # on the calling thread unless told otherwise).  Counted from here on, nothing may grow.
    with monkeypatch.context() as patched:
        patched.setattr(llvm, "SERIAL_BYTES", 0)
        for call in calls:
            call()
        warm = threading.Thread(target=lambda: [call() for call in calls])
        warm.start()
        warm.join()
    x = torch.randn(2, 24, 13, 17, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 20.0, 18.0]])
    torch.autograd.grad(R.roi_align(x, rois, 3, 0.5, 2, True).sum(), x)
    start = (_settled_threads(), _fds(), _rss_mb())
    done = 0
    for round_ in range(50):
        # 20 calls on this thread, forward and backward ...
        for i in range(20):
            if i % 4 == 0:
                torch.autograd.grad(R.roi_align(x, rois, 3, 0.5, 2, True).sum(), x)
            else:
                calls[(round_ + i) % len(calls)]()
            done += 1
        # ... and 20 on short-lived threads that start and end.
        workers = [threading.Thread(target=calls[(round_ + i) % len(calls)]) for i in range(20)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        done += len(workers)
    # A joined thread can still be leaving the kernel's task list for a moment.
    deadline = time.monotonic() + 5
    while _threads() > start[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    end = (_threads(), _fds(), _rss_mb())
    print(f"{done} calls: OS threads {start[0]} -> {end[0]}, open fds {start[1]} -> {end[1]}, "
          f"RSS {start[2]:.0f} -> {end[2]:.0f} MB")
    assert done == 2000
    assert end[0] <= start[0]
    assert end[1] == start[1]
    assert end[2] - start[2] < 64


def test_large_outputs_reuse_freed_memory_and_stay_correct(gen):
    """Outputs and input gradients of 1 MiB and more come from roigen.native's pool: freed,
    they are handed out again (no page faults), with the right values; the limit holds."""
    import torchvision

    from roigen import native

    from cases import OUTPUT, SCALE

    x = torch.randn(1, 256, 40, 40, generator=gen, requires_grad=True)  # 1.6 MB of gradient
    xy = torch.rand(100, 2, generator=gen) * 60
    rois = torch.cat([torch.zeros(100, 1), xy, xy + 2 + torch.rand(100, 2, generator=gen) * 20], 1)
    grad = torch.randn(100, 256, *OUTPUT, generator=gen)  # 1.2 MB of output

    def run():
        out = R.roi_align(x, rois, OUTPUT, SCALE, -1, True)
        (dx,) = torch.autograd.grad(out, x, grad)
        return out, dx

    out, dx = run()
    want = torchvision.ops.roi_align(x, rois, OUTPUT, SCALE, -1, True)
    (want_dx,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(dx, want_dx)
    blocks = native.pool_block_bytes(out) + native.pool_block_bytes(dx)
    before = native.pool_idle_bytes()
    del out, dx
    assert native.pool_idle_bytes() == before + blocks  # kept, not unmapped
    out, dx = run()
    assert native.pool_idle_bytes() == before  # handed out again
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(dx, want_dx)
    try:
        native.set_pool_limit(0)
        del out, dx
        assert native.pool_idle_bytes() == 0
    finally:
        native.set_pool_limit(native.POOL_LIMIT)
