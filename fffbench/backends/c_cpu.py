"""C backends: the paper's CPU levels against a CBLAS, and the optimized FFF kernel.

Built at first use with the system compiler (see :mod:`fffbench.backends._cbuild`), cached per
machine; skipped with the reason where no compiler (or, for the paper levels, no BLAS) is found.
Every kernel runs on the case's thread count (passed to the builder, handed to OpenMP per call),
writes into buffers made outside the timed call, and says in ``describe()`` what it runs on.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np

from fffbench.backends import _amx, _cbuild
from fffbench.backends._cpu import (
    NativeKernel,
    TuneCache,
    choose_top_levels,
    coordinate_search,
    cptr,
    prepared,
    resident,
    timed_min,
    to_bf16_bits,
    top_level_space,
    zeros_resident,
)
from fffbench.registry import register_backend


def _need_c(device):
    return _cbuild.reason_c()


def _need_blas(device):
    return _cbuild.reason_c() or _cbuild.reason_blas()


def _ptr(a) -> int:
    return a.ctypes.data


class CKernel(NativeKernel):
    """A C kernel: ``call(x, y, scratch, threads)``; its impl names the BLAS (if it uses one), the
    build and ``extra`` (tuned parameters, kernel path)."""

    def __init__(self, call, out_width: int, threads: int, scratch=None, bf16=False, uses_blas=True, extra=""):
        parts = [_cbuild.blas().describe() if uses_blas else "", _cbuild.load().describe(), extra]
        super().__init__(out_width, threads, scratch, bf16, "; ".join(p for p in parts if p))
        self._call = call  # its closure holds the weights

    def _run(self, x, y, scratch):
        self._call(x, y, scratch, self.threads)


def _ff_weights(weights, bf16=False):
    w1, b1, w2 = (np.asarray(weights[k], dtype=np.float32) for k in ("w1", "b1", "w2"))
    if bf16:
        w1, w2 = to_bf16_bits(w1), to_bf16_bits(w2)
    return resident(w1), resident(b1), resident(w2)


def _fff_weights(layer, weights, bf16=False):
    K, N = layer.trees, layer.nodes
    w1 = np.ascontiguousarray(weights["w1"], dtype=np.float32).reshape(K * N, layer.width)
    b1 = np.ascontiguousarray(weights["b1"], dtype=np.float32).reshape(K * N)
    w2 = np.ascontiguousarray(weights["w2"], dtype=np.float32).reshape(K * N, layer.dout)
    if bf16:
        w1, w2 = to_bf16_bits(w1), to_bf16_bits(w2)
    return resident(w1), resident(b1), resident(w2)


# ------------------------------------------------------------------------------------------ FF

def _ff_level(layer, weights, threads, fn: str, scratch=None, returns_status: bool = False) -> CKernel:
    """A dense paper level: ``fn(x, B, d, H, dout, w1, b1, w2, y, [scratch,] nthreads)`` in fffc."""
    w1, b1, w2 = _ff_weights(weights)
    f = getattr(_cbuild.load().lib, fn)

    def call(x, y, h, nt):
        args = [_ptr(x), x.shape[0], layer.width, layer.hidden, layer.dout, _ptr(w1), _ptr(b1), _ptr(w2), _ptr(y)]
        status = f(*args, *([_ptr(h)] if scratch else []), nt)
        if returns_status and status:
            raise MemoryError(f"{fn}: out of memory")

    return CKernel(call, layer.dout, threads, scratch=scratch)


@register_backend("ff-c-l1", family="ff", level="cpu-l1", available=_need_blas)
def build_ff_l1(layer, weights, *, device, dtype, threads):
    """FF CPU Level 1 in C: per row, per neuron a BLAS sdot, GELU and a BLAS saxpy (rows over threads)."""
    return _ff_level(layer, weights, threads, "ff_l1")


@register_backend("ff-c-l2", family="ff", level="cpu-l2", available=_need_blas)
def build_ff_l2(layer, weights, *, device, dtype, threads):
    """FF CPU Level 2 in C: per row two BLAS sgemv (W1 x, then W2^T GELU(.)), rows over threads."""
    return _ff_level(layer, weights, threads, "ff_l2",
                     scratch=lambda n: np.empty(threads * layer.hidden + 64, np.float32))


def _need_blas_gemm(device, dtype):
    reason = _need_blas(device)
    if reason or dtype != "bfloat16":
        return reason
    blas = _cbuild.blas()
    return None if blas.gemm_bf16 else (f"{blas.name} has no bf16 GEMM (MKL's cblas_gemm_bf16bf16f32 or OpenBLAS's "
                                       "cblas_sbgemm): pip install mkl")


@register_backend("ff-c-l3", family="ff", level="cpu-l3", dtypes=("float32", "bfloat16"), available=_need_blas_gemm)
def build_ff_l3(layer, weights, *, device, dtype, threads):
    """FF CPU Level 3 in C: two BLAS GEMMs (sgemm; bf16: the BLAS's bf16 GEMM with fp32 accumulation,
    AMX tiles under MKL where present) and a threaded GELU; the hidden buffer made once, untimed."""
    if dtype == "bfloat16":
        return _ff_l3_bf16(layer, weights, threads)
    return _ff_level(layer, weights, threads, "ff_l3", scratch=lambda n: zeros_resident((n, layer.hidden)))


def _ff_l3_bf16(layer, weights, threads) -> CKernel:
    blas = _cbuild.blas()
    if not blas.gemm_bf16:
        raise RuntimeError(f"{blas.name} has no bf16 GEMM (MKL's cblas_gemm_bf16bf16f32 or OpenBLAS's "
                           "cblas_sbgemm): pip install mkl")
    w1, b1, w2 = _ff_weights(weights, bf16=True)
    lib = _cbuild.load().lib
    H, dout = layer.hidden, layer.dout

    def scratch(n):
        return zeros_resident((n, max(H, dout))), zeros_resident((n, H), np.uint16)

    def call(x, y, s, nt):
        h, hb = s
        if lib.ff_l3_bf16(_ptr(x), x.shape[0], layer.width, H, dout, _ptr(w1), _ptr(b1), _ptr(w2), _ptr(y),
                          _ptr(h), _ptr(hb), nt):
            raise RuntimeError("ff_l3_bf16: no bf16 GEMM bound")

    amx = " (AMX tiles on this CPU)" if "MKL" in blas.name and _cpu_has("amx_bf16") else ""
    return CKernel(call, dout, threads, scratch=scratch, bf16=True, extra=f"bf16 GEMM {blas.gemm_bf16}{amx}")


def _cpu_has(flag: str) -> bool:
    return flag in _cbuild._cpu_id().split("|")[2].split()


@register_backend("ff-c-l3-alloc", family="ff", level="cpu-l3", available=_need_blas)
def build_ff_l3_alloc(layer, weights, *, device, dtype, threads):
    """The reference code's FF Level 3: as ff-c-l3 but both B x H intermediates (0.5 GB at the paper's
    size) are allocated and freed inside every timed call."""
    return _ff_level(layer, weights, threads, "ff_l3_alloc", returns_status=True)


# ----------------------------------------------------------------------------------------- FFF

@register_backend("fff-c-l1", family="fff", level="cpu-l1", available=_need_blas)
def build_fff_l1(layer, weights, *, device, dtype, threads):
    """FFF CPU Level 1 in C: per row, per tree level a BLAS sdot, GELU and a BLAS saxpy (rows over threads)."""
    w1, b1, w2 = _fff_weights(layer, weights)
    lib = _cbuild.load().lib

    def call(x, y, _, nt):
        lib.fff_l1(_ptr(x), x.shape[0], layer.width, layer.dout, layer.trees, layer.depth, _ptr(w1), _ptr(b1),
                   _ptr(w2), _ptr(y), nt)

    return CKernel(call, layer.dout, threads)


@register_backend("fff-c-l2", family="fff", level="cpu-l2", available=_need_blas)
def build_fff_l2(layer, weights, *, device, dtype, threads):
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

    return CKernel(call, layer.dout, threads, scratch=scratch)


# --------------------------------------------------------------------------------- optimized FFF

class Plan(ctypes.Structure):
    """fffc_plan in fffc_opt.c: a built kernel's shape, weights and parameters, passed by pointer."""

    _fields_ = [(n, ctypes.c_long) for n in ("d", "dout", "K", "D")] + \
        [(n, ctypes.c_void_p) for n in ("w1", "b1", "w2")] + \
        [(n, ctypes.c_int) for n in ("bf", "nthreads", "group", "pf", "mt_rows", "S", "R", "blk", "pfd", "nt", "unit", "dyn", "bagc", "xpf", "p1g")]


#: B <= SMALL takes fff_opt_small: no scratch, no per-call allocation, one thread below mt_rows
SMALL = 64
#: fff_opt_small keeps a row's nodes and activations on the stack, room for this many (WALK_STACK in
#: fffc_opt_impl.h); layers with more (trees x levels) take the walk with scratch at every batch
WALK_STACK = 64
#: parameters of fff-c-opt, the start of the search: bucket (S: phase-1 levels, R: tile rows, blk:
#: levels per pass over x, pfd: prefetch distance in tiles, nt: streaming stores of y, unit: rows per
#: phase-2 work unit, 0 a whole subtree: how many threads may share a subtree; dyn: units handed out
#: one at a time; bagc: the bag of each group of rows as its walk ends (-1), or of the whole tile after
#: its walk, bagc columns at a time (0: all); xpf: phase 2 prefetches the next tile's x rows across units
#: (claimed one ahead), over the tile's walk and bag; p1g: phase 1 walks groups of p1g rows level by level
#: instead of node-major tiles, pfd then counting groups) and walk (group: rows walked together, pf: 2
#: prefetch both children, mt_rows: rows from which the walk uses every thread); min_rows: rows per
#: subtree below which it walks; the AMX path's (bf16): _amx.DEFAULTS
DEFAULTS = {"S": None, "R": 128, "blk": 2, "pfd": 0, "nt": 1, "unit": 0, "dyn": 1, "bagc": -1, "xpf": 0, "p1g": 0, "group": 4, "pf": 2, "mt_rows": 16,
            "min_rows": 16} | _amx.DEFAULTS
#: the search space (S: top_level_space)
SPACE = {"R": [64, 128, 256], "blk": [1, 2, 3], "pfd": [0, 1, 2], "nt": [0, 1], "unit": [0, 128, 512],
         "dyn": [0, 1], "bagc": [-1, 0, 256], "xpf": [0, 1], "p1g": [0, 4, 6]}
TUNE_ROWS = 16384


class OptKernel(CKernel):
    """fff-c-opt: the bucketed schedule for one deep tree at large batch, the grouped walk otherwise,
    fff_opt_small for B <= SMALL. Tuned at build (coordinate search, cached per build and case)."""

    def __init__(self, layer, weights, bf16: bool, threads: int, params=None):
        self.layer, self._w = layer, weights
        lib = _cbuild.load().lib
        w1, b1, w2 = weights
        self.plan = Plan(layer.width, layer.dout, layer.trees, layer.depth, _ptr(w1), _ptr(b1), _ptr(w2),
                         int(bf16), max(1, threads))
        self._pp = ctypes.c_void_p(ctypes.addressof(self.plan))
        self._small, self._noop = lib.fff_opt_small, lib.fffc_noop
        self._walk, self._bucket = lib.fff_opt_walk, lib.fff_opt_bucket
        self._small_y: dict[int, np.ndarray] = {}
        self._small_ok = layer.trees * layer.levels <= WALK_STACK
        self.params = dict(DEFAULTS, S=min(choose_top_levels(layer.depth, layer.width, layer.dout), layer.depth))
        self._amx, self.amx_reason = _amx.path_for(layer, weights, bf16, max(1, threads))
        super().__init__(None, layer.dout, threads, scratch=self._scratch_for, bf16=bf16, uses_blas=False)
        note = self._tune(params)
        if self._amx and not self.params["amx"]:  # its packed weights are not kept where it is not taken
            self._amx, self.amx_reason = None, "not in the given parameters" if params else "slower here at tuning"
        self.call_us = self._call_overhead()
        isa = _cbuild.load().isa
        path = ("bf16 dots avx512bf16" if lib.fffc_bf16_native() else "bf16 widened to fp32") if bf16 else \
            ("fp32 avx512f" if "avx512f" in isa else "fp32 avx2" if "avx2" in isa else "fp32 generic")
        p = self.params
        path += _amx.impl_note(self._amx, self.amx_reason, p) if bf16 else ""
        self.impl += (f"; {path}; bucket S={p['S']} tile={p['R']} block={p['blk']} prefetch={p['pfd']} "
                      f"stream={p['nt']} unit={p['unit']} dynamic={p['dyn']} bag columns={p['bagc']} lookahead={p['xpf']} phase-1 groups={p['p1g']}; walk group={p['group']} threads from B={p['mt_rows']}; "
                      f"{note}; call overhead {self.call_us:.2f} us")

    # -- parameters and buffers
    def _apply(self, params: dict) -> None:
        self.params = p = self.params | params
        for k in ("group", "pf", "mt_rows", "S", "R", "blk", "pfd", "unit", "dyn", "bagc", "xpf", "p1g"):
            setattr(self.plan, k, int(p[k]))
        self.plan.nt = int(bool(p["nt"]) and self.layer.dout % 16 == 0)
        if self._amx:
            self._amx.set(p["agroup"], p["chunk"], p["amxpf"])
        self._buffers.clear()

    def bucketed(self, n: int) -> bool:
        S = self.params["S"]
        return self.layer.trees == 1 and self.layer.depth > S and n >= self.params["min_rows"] << S

    def amx_for(self, n: int) -> bool:
        return bool(self._amx and self._amx.serves(self.params, n))

    def _scratch_for(self, n: int):
        P = self.layer.trees * self.layer.levels
        nid, act = zeros_resident(n * P, np.int32), zeros_resident(n * P, np.float32)
        if self.amx_for(n):
            return nid, act, self._amx.scratch(n)
        if not self.bucketed(n):
            return nid, act, None
        R, T = self.params["R"], 1 << self.params["S"]
        work = zeros_resident((8 * R + 8) * self.threads, np.int32)
        units = 3 * (T + n // R + 2)
        return nid, act, (zeros_resident(n, np.int32), np.zeros(2 * T + 1 + units, np.int64), work)

    # -- calls
    def run(self, x):
        small = self._small_y.get(len(x))  # (y, its address, B) for B <= SMALL, once seen
        if small is not None:
            try:
                xp = x.cptr
            except AttributeError:
                xp = cptr(x)
            self._small(self._pp, xp, small[1], small[2])
            return small[0]
        B = len(x)
        if B <= SMALL and self._small_ok:
            y = prepared(zeros_resident((B, self.out_width), self.out_dtype))
            self._small_y[B] = (y, y.cptr, B)
            return self.run(x)
        return super().run(x)

    def _run(self, x, y, s):
        B = x.shape[0]
        if B <= SMALL and self._small_ok:
            self._small(self._pp, cptr(x), cptr(y), B)
            return
        nid, act, more = s
        if self.amx_for(B):
            self._amx.run(x, y, nid, act, more)
        elif more is None:
            self._walk(self._pp, _ptr(x), _ptr(y), B, _ptr(nid), _ptr(act))
        else:
            perm, start, work = more
            self._bucket(self._pp, _ptr(x), _ptr(y), B, _ptr(nid), _ptr(act), _ptr(perm), _ptr(start), _ptr(work))

    def _call_overhead(self, calls: int = 2000) -> float:
        """Microseconds a B = 1 ``run`` costs apart from the kernel: Python, ctypes and the C call, timed
        through run() itself with the kernel swapped for a no-op taking the same arguments (median
        of five batches of calls)."""
        x = prepared(zeros_resident((1, self.layer.width), self.out_dtype))
        kernel, walk, ts = self._small, self._walk, []
        self._small = self._walk = self._noop  # the no-op ignores the walk's two extra arguments
        try:
            self.run(x)
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(calls):
                    self.run(x)
                ts.append((time.perf_counter() - t0) / calls)
        finally:
            self._small, self._walk = kernel, walk
        return float(np.median(ts)) * 1e6

    # -- tuning
    def _tune(self, params) -> str:
        if params:
            self._apply(params)
            return "parameters given"
        L = self.layer
        key = f"{L.trees}x{L.depth} d={L.width} dout={L.dout} {'bf16' if self.bf16 else 'fp32'} threads={self.threads}"
        cache = TuneCache(_cbuild.load().directory)
        got = cache.get(key)
        if got:
            self._apply(got["params"])
            return f"tuned at build in {got['seconds']:.1f} s (cached)"
        t0 = time.perf_counter()
        best = self._search()
        secs = time.perf_counter() - t0
        cache.put(key, {"params": best, "seconds": secs})
        return f"tuned at build in {secs:.1f} s"

    def _search(self) -> dict:
        L, rng = self.layer, np.random.default_rng(0)

        def inp(n):
            x = rng.standard_normal((n, L.width), dtype=np.float32)
            return prepared(resident(to_bf16_bits(x) if self.bf16 else x))

        space = {"S": top_level_space(L.depth, L.width, L.dout)} | SPACE
        if self.threads < 2:
            space.pop("unit")
        x = inp(TUNE_ROWS)
        y = zeros_resident((TUNE_ROWS, self.out_width), self.out_dtype)

        def measure(p):
            self._apply(p)
            s = self._scratch_for(TUNE_ROWS)
            return timed_min(lambda: self._run(x, y, s), calls=1)

        best = dict(self.params)
        space["S"] = [s for s in space["S"] if L.trees == 1 and L.depth > s and best["min_rows"] << s <= TUNE_ROWS]
        if space["S"]:
            if best["S"] not in space["S"]:
                best["S"] = space["S"][len(space["S"]) // 2]
            found, _ = coordinate_search(space, {k: best[k] for k in space}, measure)
            best |= found
        if self._amx:  # the AMX path and its parameters against the best of the vdpbf16ps path
            found, _ = coordinate_search(_amx.SPACE, {k: best[k] for k in _amx.SPACE} | {"amx": 1},
                                         lambda q: measure(best | q))
            best |= found
        self._apply(best)
        if self.threads > 1:  # the smallest batch at which the walk gains from more threads
            mt = SMALL + 1
            for n in (4, 8, 16, 32, 64):
                xs, ys = inp(n), zeros_resident((n, self.out_width), self.out_dtype)
                t = {}
                for m in (SMALL + 1, 0):
                    self.plan.mt_rows = m
                    s = None if self._small_ok else self._scratch_for(n)
                    t[m] = timed_min(lambda xs=xs, ys=ys, s=s: self._run(xs, ys, s), calls=200)
                if t[0] < 0.9 * t[SMALL + 1]:
                    mt = n
                    break
            best["mt_rows"] = mt
        self._apply(best)
        return {k: best[k] for k in DEFAULTS}


@register_backend("fff-c-opt", family="fff", level="optimized", dtypes=("float32", "bfloat16"), available=_need_c)
def build_fff_opt(layer, weights, *, device, dtype, threads, params=None):
    """Optimized FFF in C: rows bucketed by subtree so each core's weights stay in its L2, node-major
    tiles (a W1 row loaded once for all its rows), output as an embedding bag; B <= 64 walks rows
    directly with no scratch or thread team; parameters tuned per machine at build; bf16: bf16
    storage, fp32 accumulation, native bf16 dots where the CPU has them."""
    bf = dtype == "bfloat16"
    return OptKernel(layer, _fff_weights(layer, weights, bf16=bf), bf, threads, params)
