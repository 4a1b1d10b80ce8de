"""C backends: the paper's CPU levels against a CBLAS, and the optimized FFF kernel.

Built at first use with the system compiler (see :mod:`fffbench.backends._cbuild`), cached per
machine; skipped with the reason where no compiler (or, for the paper levels, no BLAS) is found.
Every kernel follows the case's thread count (OpenMP threads passed explicitly per call) and writes
into buffers made outside the timed call.
"""
from __future__ import annotations

import numpy as np

from fffbench.backends import _cbuild
from fffbench.backends._cpu import NativeKernel, resident, threads, to_bf16_bits, zeros_resident
from fffbench.registry import register_backend


def _need_c(device):
    return _cbuild.reason_c()


def _need_blas(device):
    return _cbuild.reason_c() or _cbuild.reason_blas()


def _ptr(a) -> int:
    return a.ctypes.data


class CKernel(NativeKernel):
    """A C kernel; ``blas`` and ``build`` say what it runs on (recorded with the results)."""

    def __init__(self, call, out_width: int, scratch=None, bf16=False, uses_blas=True):
        b = _cbuild.load()
        self.build_info = b.describe()
        self.blas = _cbuild.blas().describe() if uses_blas else None
        self.bf16 = bf16
        self._call = call
        super().__init__(out_width, scratch)

    def run(self, x):
        y, scratch = self.buffers(x.shape[0])
        self._call(x, y, scratch, threads())
        return y

    def describe(self) -> str:
        return "; ".join(v for v in (self.blas, self.build_info) if v)


def _ff_weights(weights):
    return [resident(weights[k], np.float32) for k in ("w1", "b1", "w2")]


def _fff_weights(layer, weights, bf16=False):
    K, N = layer.trees, layer.nodes
    w1 = np.ascontiguousarray(weights["w1"], dtype=np.float32).reshape(K * N, layer.width)
    b1 = np.ascontiguousarray(weights["b1"], dtype=np.float32).reshape(K * N)
    w2 = np.ascontiguousarray(weights["w2"], dtype=np.float32).reshape(K * N, layer.dout)
    if bf16:
        w1, w2 = to_bf16_bits(w1), to_bf16_bits(w2)
    return resident(w1), resident(b1), resident(w2)


# ------------------------------------------------------------------------------------------ FF

def _ff_level(layer, weights, fn: str, scratch=None, returns_status: bool = False) -> CKernel:
    """A dense paper level: ``fn(x, B, d, H, dout, w1, b1, w2, y, [scratch,] nthreads)`` in fffc."""
    w1, b1, w2 = _ff_weights(weights)
    f = getattr(_cbuild.load().lib, fn)

    def call(x, y, h, nt):
        args = [_ptr(x), x.shape[0], layer.width, layer.hidden, layer.dout, _ptr(w1), _ptr(b1), _ptr(w2), _ptr(y)]
        status = f(*args, *([_ptr(h)] if scratch else []), nt)
        if returns_status and status:
            raise MemoryError(f"{fn}: out of memory")

    k = CKernel(call, layer.dout, scratch=scratch)
    k._keep = (w1, b1, w2)
    return k


@register_backend("ff-c-l1", family="ff", level="cpu-l1", available=_need_blas)
def build_ff_l1(layer, weights, *, device, dtype):
    """FF CPU Level 1 in C: per row, per neuron a BLAS sdot, GELU and a BLAS saxpy (rows over threads)."""
    return _ff_level(layer, weights, "ff_l1")


@register_backend("ff-c-l2", family="ff", level="cpu-l2", available=_need_blas)
def build_ff_l2(layer, weights, *, device, dtype):
    """FF CPU Level 2 in C: per row two BLAS sgemv (W1 x, then W2^T GELU(.)), rows over threads."""
    return _ff_level(layer, weights, "ff_l2", scratch=lambda n: np.empty(threads() * layer.hidden + 64, np.float32))


@register_backend("ff-c-l3", family="ff", level="cpu-l3", available=_need_blas)
def build_ff_l3(layer, weights, *, device, dtype):
    """FF CPU Level 3 in C: two BLAS sgemm and a threaded GELU; the hidden buffer made once, untimed."""
    return _ff_level(layer, weights, "ff_l3", scratch=lambda n: zeros_resident((n, layer.hidden)))


@register_backend("ff-c-l3-alloc", family="ff", level="cpu-l3", available=_need_blas)
def build_ff_l3_alloc(layer, weights, *, device, dtype):
    """The reference code's FF Level 3: as ff-c-l3 but both B x H intermediates (0.5 GB at the paper's
    size) are allocated and freed inside every timed call."""
    return _ff_level(layer, weights, "ff_l3_alloc", returns_status=True)


# ----------------------------------------------------------------------------------------- FFF

@register_backend("fff-c-l1", family="fff", level="cpu-l1", available=_need_blas)
def build_fff_l1(layer, weights, *, device, dtype):
    """FFF CPU Level 1 in C: per row, per tree level a BLAS sdot, GELU and a BLAS saxpy (rows over threads)."""
    w1, b1, w2 = _fff_weights(layer, weights)
    lib = _cbuild.load().lib

    def call(x, y, _, nt):
        lib.fff_l1(_ptr(x), x.shape[0], layer.width, layer.dout, layer.trees, layer.depth, _ptr(w1), _ptr(b1),
                   _ptr(w2), _ptr(y), nt)

    k = CKernel(call, layer.dout)
    k._keep = (w1, b1, w2)
    return k


@register_backend("fff-c-l2", family="fff", level="cpu-l2", available=_need_blas)
def build_fff_l2(layer, weights, *, device, dtype):
    """FFF CPU Level 2 in C: per tree level a batched gemv over the rows (one BLAS sgemv per row),
    a batched GELU and a batched saxpy."""
    w1, b1, w2 = _fff_weights(layer, weights)
    lib = _cbuild.load().lib

    def scratch(n):
        return np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)

    def call(x, y, s, nt):
        node, z, a = s
        lib.fff_l2(_ptr(x), x.shape[0], layer.width, layer.dout, layer.trees, layer.depth, _ptr(w1), _ptr(b1),
                   _ptr(w2), _ptr(y), _ptr(node), _ptr(z), _ptr(a), nt)

    k = CKernel(call, layer.dout, scratch=scratch)
    k._keep = (w1, b1, w2)
    return k


# --------------------------------------------------------------------------------- optimized FFF

#: tuning of fff-c-opt, chosen by measurement (notes/cpu-kernels.md): rows per tile, rows walked
#: together in the generic schedule, prefetching, and the smallest batch per subtree worth bucketing
OPT = {"tile": 128, "block": 2, "group": 4, "prefetch": 0, "stream_stores": False, "min_rows_per_subtree": 16,
       "top_levels": None}


def choose_top_levels(depth: int, width: int, dout: int) -> int:
    """Phase-1 depth S of the bucketed schedule: balance the top levels' W1 rows (phase 1's working
    set) against one subtree's W1 and W2 rows (phase 2's), the smaller S on a tie."""
    best, best_s = None, 1
    for s in range(1, depth + 1):
        top = ((1 << s) - 1) * width
        sub = ((2 << (depth - s)) - 1) * (width + dout)
        if best is None or max(top, sub) < best:
            best, best_s = max(top, sub), s
    return best_s


@register_backend("fff-c-opt", family="fff", level="optimized", dtypes=("float32", "bfloat16"), available=_need_c)
def build_fff_opt(layer, weights, *, device, dtype):
    """Optimized FFF in C: rows bucketed by subtree so each core's weights stay in its L2, node-major
    tiles (a W1 row loaded once for all its rows), next tile prefetched, output as an embedding bag
    with streaming stores; bf16: bf16 storage, fp32 accumulation."""
    import os

    bf = dtype == "bfloat16"
    w1, b1, w2 = _fff_weights(layer, weights, bf16=bf)
    lib = _cbuild.load().lib
    S = OPT["top_levels"] or choose_top_levels(layer.depth, layer.width, layer.dout)
    S = min(S, layer.depth)
    R = OPT["tile"]
    nt_ok = int(layer.dout % 16 == 0 and bool(OPT["stream_stores"]))
    L = layer.levels
    max_threads = os.cpu_count() or 1

    def bucketed(n):
        return layer.trees == 1 and layer.depth > S and n >= OPT["min_rows_per_subtree"] << S

    def scratch(n):
        P = layer.trees * L
        nid, act = zeros_resident(n * P, np.int32), zeros_resident(n * P, np.float32)
        if not bucketed(n):
            return nid, act, None
        work = zeros_resident((8 * R + 8) * max_threads, np.int32)
        return nid, act, (zeros_resident(n, np.int32), np.empty((1 << S) + 1, np.int64), work)

    def call(x, y, s, nt):
        B = x.shape[0]
        nid, act, more = s
        if more is None:
            lib.fff_opt_walk(_ptr(x), B, layer.width, layer.dout, layer.trees, layer.depth, _ptr(w1), _ptr(b1),
                             _ptr(w2), _ptr(y), int(bf), OPT["group"], OPT["prefetch"], nt_ok, nt, _ptr(nid),
                             _ptr(act))
        else:
            perm, start, work = more
            lib.fff_opt_bucket(_ptr(x), B, layer.width, layer.dout, layer.depth, _ptr(w1), _ptr(b1), _ptr(w2),
                               _ptr(y), int(bf), S, R, OPT["block"], OPT["prefetch"], nt_ok, min(nt, max_threads),
                               _ptr(nid), _ptr(act), _ptr(perm), _ptr(start), _ptr(work))

    k = CKernel(call, layer.dout, scratch=scratch, bf16=bf, uses_blas=False)
    k._keep = (w1, b1, w2)
    k.top_levels = S
    return k
