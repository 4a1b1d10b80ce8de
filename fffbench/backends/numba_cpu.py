"""Numba backends: the paper's CPU levels for FF and FFF in float32, plus a Numba version of the
optimized FFF walk (for the measured choice between Numba and C, see notes/cpu-kernels.md).

The BLAS-1/2 primitives of Levels 1 and 2 (dot, axpy, gemv) are explicit loops that LLVM
vectorises (``fastmath`` limited to reassociation and contraction, so reductions vectorise and
nothing else changes); Level 3 calls the BLAS GEMM through ``np.dot``. Rows are spread over Numba's
threads with ``prange``; every kernel follows the case's thread count and writes into buffers made
outside the timed call. Functions are compiled at first call (never timed) and cached on disk.
"""
from __future__ import annotations

import math

import numpy as np

from fffbench.backends._cpu import NativeKernel, resident, threads, zeros_resident
from fffbench.registry import register_backend


def _need_numba(device):
    import importlib.util

    try:
        found = importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["numba"] is None
        found = False
    return None if found else "numba is not installed (pip install 'fffbench[numba]')"


# Kernels are defined on first use (numba is optional and slow to import) but as module globals,
# not closures, so that Numba's on-disk cache finds them again in the next process.
_FM = {"reassoc", "contract"}
nb = None


def _define():
    global nb, njit, pjit, inv_sqrt2, half, one, gelu, dot, axpy, ff_l1, ff_l2, gelu_bias_rows, ff_l3
    global fff_l1, fff_l2_gemv, fff_l2_gelu, fff_l2_axpy, zero_rows, fff_l2, fff_walk
    import numba as nb

    njit = nb.njit(cache=True, fastmath=_FM, nogil=True)
    pjit = nb.njit(cache=True, fastmath=_FM, nogil=True, parallel=True)
    inv_sqrt2 = np.float32(1.0 / math.sqrt(2.0))
    half = np.float32(0.5)
    one = np.float32(1.0)

    @njit
    def gelu(z):
        return half * z * (one + math.erf(z * inv_sqrt2))

    @njit
    def dot(a, b, n):
        s = np.float32(0.0)
        for j in range(n):
            s += a[j] * b[j]
        return s

    @njit
    def axpy(alpha, xv, yv, n):
        for j in range(n):
            yv[j] += alpha * xv[j]

    @pjit
    def ff_l1(x, w1, b1, w2, y):
        B, d = x.shape
        H, dout = w2.shape
        for r in nb.prange(B):
            yr = y[r]
            yr[:] = 0.0
            xr = x[r]
            for j in range(H):
                a = gelu(dot(xr, w1[j], d) + b1[j])
                axpy(a, w2[j], yr, dout)

    @pjit
    def ff_l2(x, w1, b1, w2, y, h):
        B, d = x.shape
        H, dout = w2.shape
        nt = h.shape[0]
        # one GEMV per row and layer: h = W1 x (H dots), GELU, y = W2^T h (H axpys); rows in
        # contiguous blocks, one hidden buffer per block
        for t in nb.prange(nt):
            ht = h[t]
            for r in range(B * t // nt, B * (t + 1) // nt):
                xr = x[r]
                for j in range(H):
                    ht[j] = gelu(dot(xr, w1[j], d) + b1[j])
                yr = y[r]
                yr[:] = 0.0
                for j in range(H):
                    axpy(ht[j], w2[j], yr, dout)

    @pjit
    def gelu_bias_rows(h, b1):
        B, H = h.shape
        for r in nb.prange(B):
            hr = h[r]
            for j in range(H):
                hr[j] = gelu(hr[j] + b1[j])

    @njit
    def ff_l3(x, w1t, b1, w2, y, h):
        np.dot(x, w1t, h)          # BLAS sgemm
        gelu_bias_rows(h, b1)
        np.dot(h, w2, y)           # BLAS sgemm

    @pjit
    def fff_l1(x, w1, b1, w2, y, depth):
        B, d = x.shape
        K, _, dout = w2.shape
        for r in nb.prange(B):
            yr = y[r]
            yr[:] = 0.0
            xr = x[r]
            for k in range(K):
                n = 0
                for _ in range(depth + 1):
                    z = dot(xr, w1[k, n], d) + b1[k, n]
                    axpy(gelu(z), w2[k, n], yr, dout)
                    n = 2 * n + 1 + (1 if z > 0 else 0)

    @pjit
    def fff_l2_gemv(x, w1k, b1k, node, z):
        B, d = x.shape
        for r in nb.prange(B):
            z[r] = dot(x[r], w1k[node[r]], d) + b1k[node[r]]

    @pjit
    def fff_l2_gelu(z, a):
        for r in nb.prange(z.shape[0]):
            a[r] = gelu(z[r])

    @pjit
    def fff_l2_axpy(w2k, node, z, a, y):
        B, dout = y.shape
        for r in nb.prange(B):
            n = node[r]
            axpy(a[r], w2k[n], y[r], dout)
            node[r] = 2 * n + 1 + (1 if z[r] > 0 else 0)

    @pjit
    def zero_rows(y):
        for r in nb.prange(y.shape[0]):
            y[r, :] = 0.0

    @njit
    def fff_l2(x, w1, b1, w2, y, depth, node, z, a):
        K = w1.shape[0]
        zero_rows(y)
        for k in range(K):
            node[:] = 0
            for _ in range(depth + 1):
                fff_l2_gemv(x, w1[k], b1[k], node, z)   # batched gemv over the rows
                fff_l2_gelu(z, a)                        # batched GELU
                fff_l2_axpy(w2[k], node, z, a, y)        # batched axpy, then the step down

    @pjit
    def fff_walk(x, w1, b1, w2, y, depth, top, sub):
        # the optimized walk in two phases (one tree), as the C kernel's schedule:
        # phase 1 walks the top S levels of every row; rows are bucketed by their level-S subtree;
        # phase 2 walks each subtree's rows (its weights stay in the core's L2), then the output
        # as an embedding bag, written once
        B, d = x.shape
        dout = w2.shape[1]
        S = top.shape[1]
        L = depth + 1
        T = 1 << S
        for r in nb.prange(B):
            xr = x[r]
            n = 0
            for lvl in range(S):
                z = dot(xr, w1[n], d) + b1[n]
                top[r, lvl] = gelu(z)
                n = 2 * n + 1 + (1 if z > 0 else 0)
            sub[r] = n - (T - 1)
        start = np.zeros(T + 1, np.int64)
        for r in range(B):
            start[sub[r] + 1] += 1
        for t in range(T):
            start[t + 1] += start[t]
        fill = start[:T].copy()
        order = np.empty(B, np.int64)
        for r in range(B):  # counting sort by subtree
            order[fill[sub[r]]] = r
            fill[sub[r]] += 1
        for t in nb.prange(T):
            idx = np.empty(L, np.int64)
            act = np.empty(L, np.float32)
            for i in range(start[t], start[t + 1]):
                r = order[i]
                xr = x[r]
                for lvl in range(S):
                    idx[lvl] = ((1 << lvl) - 1) + (t >> (S - lvl))
                    act[lvl] = top[r, lvl]
                n = (T - 1) + t
                for lvl in range(S, L):
                    z = dot(xr, w1[n], d) + b1[n]
                    idx[lvl] = n
                    act[lvl] = gelu(z)
                    n = 2 * n + 1 + (1 if z > 0 else 0)
                yr = y[r]
                yr[:] = 0.0
                for p in range(L):
                    axpy(act[p], w2[idx[p]], yr, dout)





def _kernels():
    if nb is None:
        _define()
    return dict(ff_l1=ff_l1, ff_l2=ff_l2, ff_l3=ff_l3, fff_l1=fff_l1, fff_l2=fff_l2, fff_walk=fff_walk)


def _set_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


class NumbaKernel(NativeKernel):
    def __init__(self, call, out_width: int, scratch=None):
        import numba

        self.numba = numba.__version__
        self.threading_layer = None
        self._call = call
        super().__init__(out_width, scratch)

    def run(self, x):
        y, s = self.buffers(x.shape[0])
        _set_threads(threads())
        self._call(x, y, s)
        if self.threading_layer is None:
            import numba

            try:
                self.threading_layer = numba.threading_layer()
            except ValueError:
                pass
        return y


def _f32(a):
    return resident(a, np.float32)


@register_backend("ff-numba-l1", family="ff", level="cpu-l1", available=_need_numba)
def build_ff_l1(layer, weights, *, device, dtype):
    """FF CPU Level 1 in Numba: per row, per neuron a dot, GELU and an axpy (rows over threads)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, s: k["ff_l1"](x, w1, b1, w2, y), layer.dout)


@register_backend("ff-numba-l2", family="ff", level="cpu-l2", available=_need_numba)
def build_ff_l2(layer, weights, *, device, dtype):
    """FF CPU Level 2 in Numba: per row a GEMV (W1 x), GELU, and a GEMV (W2^T h), rows over threads."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, h: k["ff_l2"](x, w1, b1, w2, y, h), layer.dout,
                       scratch=lambda n: np.empty((max(1, min(threads(), n)), layer.hidden), np.float32))


@register_backend("ff-numba-l3", family="ff", level="cpu-l3", available=_need_numba)
def build_ff_l3(layer, weights, *, device, dtype):
    """FF CPU Level 3 in Numba: two BLAS sgemm (np.dot) and a threaded GELU; hidden buffer made once."""
    k = _kernels()
    w1t, b1, w2 = _f32(weights["w1"]).T, _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, h: k["ff_l3"](x, w1t, b1, w2, y, h), layer.dout,
                       scratch=lambda n: zeros_resident((n, layer.hidden)))


@register_backend("fff-numba-l1", family="fff", level="cpu-l1", available=_need_numba)
def build_fff_l1(layer, weights, *, device, dtype):
    """FFF CPU Level 1 in Numba: per row, per tree level a dot, GELU and an axpy (rows over threads)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    return NumbaKernel(lambda x, y, s: k["fff_l1"](x, w1, b1, w2, y, layer.depth), layer.dout)


@register_backend("fff-numba-l2", family="fff", level="cpu-l2", available=_need_numba)
def build_fff_l2(layer, weights, *, device, dtype):
    """FFF CPU Level 2 in Numba: per tree level a batched gemv over the rows, a batched GELU and a
    batched axpy (each a parallel loop over the rows)."""
    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])

    def scratch(n):
        return np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)

    def call(x, y, s):
        node, z, a = s
        k["fff_l2"](x, w1, b1, w2, y, layer.depth, node, z, a)

    return NumbaKernel(call, layer.dout, scratch=scratch)


@register_backend("fff-numba-opt", family="fff", level="optimized", available=_need_numba)
def build_fff_opt(layer, weights, *, device, dtype):
    """Optimized FFF in Numba: rows bucketed by subtree (two phases, one tree), each subtree's rows on
    one thread with its weights in that core's L2, output as an embedding bag written once; other
    shapes fall back to the Level-1 walk. The C kernel fff-c-opt is the faster of the two (notes/)."""
    from fffbench.backends.c_cpu import choose_top_levels

    k = _kernels()
    w1, b1, w2 = _f32(weights["w1"]), _f32(weights["b1"]), _f32(weights["w2"])
    S = choose_top_levels(layer.depth, layer.width, layer.dout)
    if layer.trees != 1 or layer.depth <= S:
        return NumbaKernel(lambda x, y, s: k["fff_l1"](x, w1, b1, w2, y, layer.depth), layer.dout)
    w1, b1, w2 = w1[0], b1[0], w2[0]

    def scratch(n):
        return np.empty((n, S), np.float32), np.empty(n, np.int64)

    return NumbaKernel(lambda x, y, s: k["fff_walk"](x, w1, b1, w2, y, layer.depth, s[0], s[1]), layer.dout,
                       scratch=scratch)
