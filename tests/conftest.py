"""Shared fixtures. The test-only backends live in ``testbackends`` (a wrong one, one that raises,
one that crashes its process, a slowed one), registered in this process and, through
``FFFBENCH_PLUGINS`` and ``PYTHONPATH``, in every worker and shard process the tests start."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ["FFFBENCH_PLUGINS"] = "testbackends"
os.environ["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                     if p and p != HERE])

import testbackends  # noqa: E402,F401  (registers the test-only backends here too)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where torch sees a CUDA GPU; elsewhere they are skipped with the reason."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
