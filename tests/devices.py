"""Skips for tests that need a device this machine may lack."""

from __future__ import annotations

import os

import pytest


def require_vulkan() -> None:
    """Skip without a Vulkan device, except under CI, which installs one (lavapipe)."""
    from roigen.backends import wgpu as vulkan

    try:
        vulkan.device()
    except vulkan.VulkanUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
