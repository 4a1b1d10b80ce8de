"""Shared fixtures and test-only backends (a wrong one and a crashing one) for the runner tests."""
from __future__ import annotations

import numpy as np
import pytest

from fffbench.registry import Kernel, register_backend


class _NumpyKernel(Kernel):
    def __init__(self, fn):
        self.fn = fn

    def prepare(self, x):
        return np.asarray(x, dtype=np.float32)

    def run(self, x):
        return self.fn(x)


@register_backend("test-fff-no-activation", family="fff", level="cpu-l2")
def _build_wrong(layer, weights, *, device, dtype):
    """The reference CPU code's Level 2 defect: the axpy scales by 1.0, discarding the activations."""
    w2 = weights["w2"].astype(np.float64)

    def fn(x):
        nodes, _, _ = layer.walk(x, weights)
        return sum(w2[k][nodes[:, k]].sum(axis=1) for k in range(layer.trees))
    return _NumpyKernel(fn)


@register_backend("test-ff-raises", family="ff", level="cpu-l1")
def _build_raises(layer, weights, *, device, dtype):
    """Raises inside the call, as a crashing extension would."""
    def fn(x):
        raise RuntimeError("boom from a broken backend")
    return _NumpyKernel(fn)


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
