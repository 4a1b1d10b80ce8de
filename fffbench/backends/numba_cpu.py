"""Numba backends: the paper's CPU levels for FF and FFF in float32, plus a Numba version of the
optimized FFF walk (for the measured choice between Numba and C, see notes/cpu-kernels.md).

The BLAS-1/2 primitives of Levels 1 and 2 (dot, axpy, gemv) are explicit loops that LLVM
vectorises (``fastmath`` limited to reassociation and contraction, so reductions vectorise and
nothing else changes); Level 3 calls the BLAS GEMM through ``np.dot``. Rows are spread over Numba's
threads with ``prange``; every kernel follows the case's thread count and writes into buffers made
outside the timed call. Functions are compiled at first call (never timed) and cached on disk.
"""
from __future__ import annotations

import numpy as np

from fffbench.backends._cpu import NativeKernel, choose_top_levels, resident, zeros_resident
from fffbench.registry import register_backend


def _need_numba(device):
    import importlib.util

    try:
        found = importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["numba"] is None
        found = False
    return None if found else "numba is not installed (pip install 'fffbench[numba]')"


def _kernels():
    """The compiled kernels (a module imported on first use: Numba is optional and slow to import)."""
    from fffbench.backends import _numba_kernels

    return _numba_kernels


def _set_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


class NumbaKernel(NativeKernel):
    """``call(x, y, scratch)`` run on the case's thread count; its closure holds the weights."""

    def __init__(self, call, out_width: int, threads: int, scratch=None):
        import numba

        super().__init__(out_width, threads, scratch, impl=f"numba {numba.__version__}")
        self._call = call

    def _run(self, x, y, scratch):
        _set_threads(self.threads)
        self._call(x, y, scratch)


def _f32(a):
    return resident(a, np.float32)


@register_backend("ff-numba-l1", family="ff", level="cpu-l1", available=_need_numba)
def build_ff_l1(layer, weights, *, device, dtype, threads):
    """FF CPU Level 1 in Numba: per row, per neuron a dot, GELU and an axpy (rows over threads)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, s: k.ff_l1(x, w1, b1, w2, y), layer.dout, threads)


@register_backend("ff-numba-l2", family="ff", level="cpu-l2", available=_need_numba)
def build_ff_l2(layer, weights, *, device, dtype, threads):
    """FF CPU Level 2 in Numba: per row a GEMV (W1 x), GELU, and a GEMV (W2^T h), rows over threads."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, h: k.ff_l2(x, w1, b1, w2, y, h), layer.dout, threads,
                       scratch=lambda n: np.empty((max(1, min(threads, n)), layer.hidden), np.float32))


@register_backend("ff-numba-l3", family="ff", level="cpu-l3", available=_need_numba)
def build_ff_l3(layer, weights, *, device, dtype, threads):
    """FF CPU Level 3 in Numba: two BLAS sgemm (np.dot) and a threaded GELU; hidden buffer made once."""
    k = _kernels()
    w1t, b1, w2 = _f32(weights["w1"]).T, _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, h: k.ff_l3(x, w1t, b1, w2, y, h), layer.dout, threads,
                       scratch=lambda n: zeros_resident((n, layer.hidden)))


@register_backend("fff-numba-l1", family="fff", level="cpu-l1", available=_need_numba)
def build_fff_l1(layer, weights, *, device, dtype, threads):
    """FFF CPU Level 1 in Numba: per row, per tree level a dot, GELU and an axpy (rows over threads)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, s: k.fff_l1(x, w1, b1, w2, y, layer.depth), layer.dout, threads)


@register_backend("fff-numba-l2", family="fff", level="cpu-l2", available=_need_numba)
def build_fff_l2(layer, weights, *, device, dtype, threads):
    """FFF CPU Level 2 in Numba: per tree level a batched gemv over the rows, a batched GELU and a
    batched axpy (each a parallel loop over the rows)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])

    def scratch(n):
        return np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)

    def call(x, y, s):
        node, z, a = s
        k.fff_l2(x, w1, b1, w2, y, layer.depth, node, z, a)

    return NumbaKernel(call, layer.dout, threads, scratch=scratch)


@register_backend("fff-numba-opt", family="fff", level="optimized", available=_need_numba)
def build_fff_opt(layer, weights, *, device, dtype, threads):
    """Optimized FFF in Numba: rows bucketed by subtree (two phases, one tree), each subtree's rows on
    one thread with its weights in that core's L2, output as an embedding bag written once; other
    shapes fall back to the Level-1 walk. The C kernel fff-c-opt is the faster of the two (notes/)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    S = choose_top_levels(layer.depth, layer.width, layer.dout)
    if layer.trees != 1 or layer.depth <= S:
        return NumbaKernel(lambda x, y, s: k.fff_l1(x, w1, b1, w2, y, layer.depth), layer.dout, threads)
    w1, b1, w2 = w1[0], b1[0], w2[0]

    def scratch(n):
        return np.empty((n, S), np.float32), np.empty(n, np.int64)

    return NumbaKernel(lambda x, y, s: k.fff_walk(x, w1, b1, w2, y, layer.depth, s[0], s[1]), layer.dout, threads,
                       scratch=scratch)
