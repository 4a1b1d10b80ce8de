"""The Numba kernels of :mod:`fffbench.backends.numba_cpu`, at module level so that Numba's on-disk
cache (``cache=True``) finds them again in the next process. Imported only when a Numba backend is
built: importing Numba takes about a second, and it is optional."""
import math

import numba as nb
import numpy as np

# fastmath limited to reassociation and contraction: reductions vectorise, nothing else changes
_FM = {"reassoc", "contract"}
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
