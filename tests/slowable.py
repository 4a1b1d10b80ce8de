"""A test-only backend that can be slowed on purpose, for the regression tests of ``fffbench compare``.

``test-fff-slowable`` is ``fff-gather`` whose timed call repeats the whole computation
``FFFBENCH_TEST_SLOWDOWN`` times (read when the kernel is built; default 1). The slowdown is real
work, not a sleep or a rescaled sample, so a run made with it exercises the whole measuring path.
"""
from __future__ import annotations

import os

from fffbench.registry import Kernel, get_backend, register_backend

ENV = "FFFBENCH_TEST_SLOWDOWN"


class _Repeated(Kernel):
    def __init__(self, inner: Kernel, times: int):
        self.inner, self.times, self.device = inner, times, inner.device

    def prepare(self, x):
        return self.inner.prepare(x)

    def run(self, x):
        for _ in range(self.times - 1):
            self.inner.run(x)
        return self.inner.run(x)

    def to_numpy(self, y):
        return self.inner.to_numpy(y)

    def synchronize(self):
        self.inner.synchronize()


@register_backend("test-fff-slowable", family="fff", level="optimized", devices=("cpu",))
def build_slowable(layer, weights, *, device, dtype):
    """fff-gather, its timed call repeated FFFBENCH_TEST_SLOWDOWN times (a deliberately slowed backend)."""
    inner = get_backend("fff-gather").build(layer, weights, device=device, dtype=dtype)
    return _Repeated(inner, max(1, int(os.environ.get(ENV, "1"))))
