import os
import zlib

import pytest
import torch


def pytest_configure(config):
    # Tests build into a private cache so they neither read nor pollute the user's.
    if "ROIGEN_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["ROIGEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="roigen-test-cache-")


@pytest.fixture
def gen(request):
    """A fresh generator per test, seeded from the test's name (reproducible, not shared)."""
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED).
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))
