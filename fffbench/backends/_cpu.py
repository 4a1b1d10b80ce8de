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


def aligned_empty(shape, dtype=np.float32, align: int = 64, huge: bool = False) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``align``-byte boundary
    (non-temporal stores need it). numpy advises huge pages for arrays of 4 MiB and more, which
    matters here: with 4 KiB pages a 2-core VM loses much of its bandwidth to TLB misses. ``huge``
    pads a smaller array to that size (and 2 MiB alignment) so that it gets them too."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    if huge:
        align = max(align, 2 ** 21)
    size = n * dtype.itemsize + align
    raw = np.empty(max(size, 2 ** 22 + align) if huge else size, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(shape)


def resident(a, dtype=None) -> np.ndarray:
    """A C-contiguous copy of ``a`` in a 2 MiB-aligned, huge-page-advised buffer, touched once (so no
    timed call pays page faults). Used for weights, inputs and outputs of the native backends."""
    a = np.asarray(a, dtype=dtype)
    out = aligned_empty(a.shape, a.dtype, huge=a.nbytes >= 2 ** 20)
    out[...] = a
    return out


def zeros_resident(shape, dtype=np.float32) -> np.ndarray:
    out = aligned_empty(shape, dtype, huge=int(np.prod(shape)) * np.dtype(dtype).itemsize >= 2 ** 20)
    out[...] = 0
    return out


def to_bf16_bits(a) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(h) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


class NativeKernel(Kernel):
    """A CPU kernel taking a contiguous float32 (or bfloat16-bit) array and writing into an output
    (and optional scratch) buffer made per batch size in ``prepare``, outside any timed call, and
    reused by every call; ``to_numpy`` therefore returns a copy."""

    device = "cpu"
    bf16 = False

    def __init__(self, out_width: int, scratch=None):
        out_dtype = np.uint16 if self.bf16 else np.float32
        self._make = lambda n: (zeros_resident((n, out_width), out_dtype), scratch(n) if scratch else None)
        self._buffers: dict[int, tuple] = {}

    def buffers(self, batch: int) -> tuple:
        """(output, scratch) for ``batch`` rows; one batch size is kept at a time to bound memory."""
        if batch not in self._buffers:
            self._buffers.clear()
            self._buffers[batch] = self._make(batch)
        return self._buffers[batch]

    def prepare(self, x):
        x = as_f32(x)
        x = resident(to_bf16_bits(x) if self.bf16 else x)
        self.buffers(x.shape[0])
        return x

    def to_numpy(self, y):
        return from_bf16_bits(y) if self.bf16 else np.array(y, dtype=np.float32, copy=True)
