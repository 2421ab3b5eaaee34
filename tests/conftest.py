import os

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
    return torch.Generator().manual_seed(abs(hash(request.node.nodeid)) % (2**31))
