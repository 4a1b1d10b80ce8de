"""Shared plumbing for the native CPU backends (Numba and C): input conversion, output buffers,
thread counts and bfloat16 storage."""
from __future__ import annotations

import numpy as np

from fffbench.registry import Kernel


def threads() -> int:
    """The thread count of the current case: the runner pins torch's (and every BLAS/OpenMP pool's)
    count with :func:`fffbench.runner.pinned_threads`, so torch's setting is the one to follow."""
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        import os

        return os.cpu_count() or 1


def as_f32(x) -> np.ndarray:
    """A C-contiguous float32 array from numpy or torch input (any strides)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def aligned_empty(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte boundary
    (non-temporal stores need it). numpy advises huge pages for large arrays, which matters here:
    with 4 KiB pages a 2-core VM loses about half its bandwidth to TLB misses."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dtype.itemsize + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(shape)


def to_bf16_bits(a) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(h) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


class Buffers:
    """Per-batch-size buffers (outputs, scratch) made on first use, so no timed call allocates."""

    def __init__(self, make):
        self.make, self.cache = make, {}

    def get(self, batch: int):
        if batch not in self.cache:
            self.cache.clear()  # one batch size at a time: keep memory bounded
            self.cache[batch] = self.make(batch)
        return self.cache[batch]


class NativeKernel(Kernel):
    """A CPU kernel taking a contiguous float32 (or bfloat16-bit) array; ``to_numpy`` returns a
    copy because the output buffer is reused by the next call."""

    device = "cpu"
    bf16 = False

    def prepare(self, x):
        x = as_f32(x)
        return to_bf16_bits(x) if self.bf16 else x

    def to_numpy(self, y):
        return from_bf16_bits(y) if self.bf16 else np.array(y, dtype=np.float32, copy=True)
