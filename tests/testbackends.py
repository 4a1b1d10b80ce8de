"""Test-only backends, importable in every process (tests set ``FFFBENCH_PLUGINS=testbackends``):
a correct one in numpy, a wrong one, one that raises, one that crashes its process, one that
raises torch's out-of-memory error, one that kills its shard, and one slowed on purpose.

``test-fff-slowable`` is ``fff-gather`` whose timed call repeats the whole computation
``FFFBENCH_TEST_SLOWDOWN`` times (read when the kernel is built; default 1). The slowdown is real
work, not a sleep or a rescaled sample, so a run made with it exercises the whole measuring path.
``test-fff-crash`` kills its own process with the signal named by ``FFFBENCH_TEST_SIGNAL``
(default SIGSEGV) after ``FFFBENCH_TEST_CRASH_AFTER`` calls (default 0: on the first call).
"""
from __future__ import annotations

import os
import signal

import numpy as np

from fffbench.registry import Kernel, get_backend, register_backend

SLOWDOWN_ENV = "FFFBENCH_TEST_SLOWDOWN"


class NumpyKernel(Kernel):
    def __init__(self, fn):
        self.fn = fn

    def prepare(self, x):
        return np.asarray(x, dtype=np.float32)

    def run(self, x):
        return self.fn(x)


@register_backend("test-fff-no-activation", family="fff", level="cpu-l2")
def build_wrong(layer, weights, *, device, dtype):
    """The reference CPU code's Level 2 defect: the axpy scales by 1.0, discarding the activations."""
    w2 = weights["w2"].astype(np.float64)

    def fn(x):
        nodes, _, _ = layer.walk(x, weights)
        return sum(w2[k][nodes[:, k]].sum(axis=1) for k in range(layer.trees))
    return NumpyKernel(fn)


@register_backend("test-fff-numpy", family="fff", level="optimized")
def build_numpy(layer, weights, *, device, dtype):
    """A correct FFF in numpy (the float64 walk, cast to float32): a backend whose worker processes
    start in a fraction of a second, for the tests of the harness itself."""
    def fn(x):
        return layer.reference(x, weights).astype(np.float32)
    return NumpyKernel(fn)


@register_backend("test-ff-numpy", family="ff", level="cpu-l3")
def build_ff_numpy(layer, weights, *, device, dtype):
    """A correct dense FF in numpy (float64, cast to float32), for the harness's own tests."""
    def fn(x):
        return layer.reference(x, weights).astype(np.float32)
    return NumpyKernel(fn)


@register_backend("test-ff-raises", family="ff", level="cpu-l1")
def build_raises(layer, weights, *, device, dtype):
    """Raises inside the call, as a crashing extension would."""
    def fn(x):
        raise RuntimeError("boom from a broken backend")
    return NumpyKernel(fn)


@register_backend("test-fff-crash", family="fff", level="optimized")
def build_crash(layer, weights, *, device, dtype):
    """Correct (it is test-fff-numpy) until call N, then kills its process as a segfaulting extension would."""
    inner = get_backend("test-fff-numpy").build(layer, weights, device=device, dtype=dtype)
    after = int(os.environ.get("FFFBENCH_TEST_CRASH_AFTER", "0"))
    sig = getattr(signal, os.environ.get("FFFBENCH_TEST_SIGNAL", "SIGSEGV"))
    calls = {"n": 0}

    class Crashing(Kernel):
        def prepare(self, x):
            return inner.prepare(x)

        def run(self, x):
            if calls["n"] >= after:
                os.kill(os.getpid(), sig)
            calls["n"] += 1
            return inner.run(x)

        def to_numpy(self, y):
            return inner.to_numpy(y)

    return Crashing()


@register_backend("test-fff-oom", family="fff", level="optimized")
def build_oom(layer, weights, *, device, dtype):
    """Raises torch's out-of-memory error type inside the call."""
    def fn(x):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return NumpyKernel(fn)


class Repeated(Kernel):
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
    return Repeated(inner, max(1, int(os.environ.get(SLOWDOWN_ENV, "1"))))


@register_backend("test-fff-kill-shard", family="fff", level="optimized", devices=("cpu",))
def build_kill_shard(layer, weights, *, device, dtype):
    """test-fff-numpy, but in the shard given GPU ``FFFBENCH_TEST_KILL_GPU`` (its CUDA_VISIBLE_DEVICES),
    on a batch of ``FFFBENCH_TEST_KILL_BATCH`` rows, it kills that shard's process (the worker's
    parent) on its first call, once: a marker file (``FFFBENCH_TEST_KILL_MARKER``) remembers it, so
    the shard's re-run completes."""
    inner = get_backend("test-fff-numpy").build(layer, weights, device=device, dtype=dtype)
    marker = os.environ.get("FFFBENCH_TEST_KILL_MARKER")
    armed = (os.environ.get("CUDA_VISIBLE_DEVICES") == os.environ.get("FFFBENCH_TEST_KILL_GPU") and marker
             and not os.path.exists(marker))

    class Killing(Kernel):
        def prepare(self, x):
            return inner.prepare(x)

        def run(self, x):
            if armed and x.shape[0] == int(os.environ.get("FFFBENCH_TEST_KILL_BATCH", "-1")) \
                    and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getppid(), signal.SIGKILL)
            return inner.run(x)

        def to_numpy(self, y):
            return inner.to_numpy(y)

    return Killing()
