"""Shared plumbing for the native CPU backends (Numba and C): inputs in the kernels' form, output
buffers, bfloat16 storage, and the parameters of the bucketed FFF schedule (its phase-1 depth and
the search that tunes it on each machine)."""
from __future__ import annotations

import ctypes
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fffbench.registry import Kernel


def as_f32(x) -> np.ndarray:
    """A C-contiguous float32 array from numpy or torch input (any strides); no copy when ``x`` is
    one already."""
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


class StreamingCopy:
    """``nbytes`` copied between two resident buffers by the C library's threaded copy with
    streaming stores (``fffc_copy``): the copy floors' measure (run ceilings and bench_cpu.py's
    paired floor). Raises the C build's error where the library cannot be built."""

    def __init__(self, nbytes: int, threads: int):
        from fffbench.backends import _cbuild

        self.lib, self.nbytes, self.threads = _cbuild.load().lib, nbytes, threads
        self.src, self.dst = zeros_resident(nbytes, np.uint8), zeros_resident(nbytes, np.uint8)
        self.src[:] = 1
        self._sp, self._dp = self.src.ctypes.data, self.dst.ctypes.data

    def __call__(self) -> None:
        self.lib.fffc_copy(self._dp, self._sp, self.nbytes, self.threads)


def to_bf16_bits(a) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(h) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


class Prepared(np.ndarray):
    """An input in a kernel's native form that carries its data address as a ready ctypes object:
    reading ``ndarray.ctypes.data`` costs over a microsecond, more than a B = 1 walk."""

    cptr: ctypes.c_void_p


def prepared(a: np.ndarray) -> Prepared:
    v = a.view(Prepared)
    v.cptr = ctypes.c_void_p(a.ctypes.data)
    return v


def cptr(a) -> ctypes.c_void_p:
    """``a``'s data address as a ctypes object (a slice of a Prepared array has its own address)."""
    p = a.__dict__.get("cptr") if type(a) is Prepared else None
    return p if p is not None else ctypes.c_void_p(a.ctypes.data)


class NativeKernel(Kernel):
    """A CPU kernel taking a contiguous float32 (or bfloat16-bit) array and writing into an output
    (and optional scratch) buffer. ``run`` (the timed call) reuses buffers made per batch size in
    ``prepare``; ``to_numpy`` therefore returns a copy. Calling the kernel on a numpy array instead
    writes straight into a new output array and reads a contiguous float32 input in place, so an
    input is copied at most once (bf16: converted) and the output not at all (bf16: converted once).

    Subclasses implement ``_run(x, y, scratch)``; ``threads`` is the case's thread count.
    """

    device = "cpu"

    def __init__(self, out_width: int, threads: int, scratch=None, bf16: bool = False, impl: str = ""):
        self.bf16, self.threads, self.impl = bf16, max(1, int(threads)), impl
        self.out_width, self.out_dtype = out_width, np.uint16 if bf16 else np.float32
        self._scratch = scratch
        self._buffers: dict[int, tuple] = {}

    def describe(self) -> str:
        return self.impl

    def buffers(self, batch: int) -> tuple:
        """(output, scratch) for ``batch`` rows; one batch size is kept at a time to bound memory."""
        b = self._buffers.get(batch)
        if b is None:
            self._buffers.clear()
            b = self._buffers[batch] = (zeros_resident((batch, self.out_width), self.out_dtype),
                                        self._scratch(batch) if self._scratch else None)
        return b

    def prepare(self, x):
        x = as_f32(x)
        x = resident(to_bf16_bits(x) if self.bf16 else x)
        self.buffers(x.shape[0])
        return prepared(x)

    def run(self, x):
        y, scratch = self.buffers(x.shape[0])
        self._run(x, y, scratch)
        return y

    def _run(self, x, y, scratch):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        if type(x).__module__.startswith("torch"):
            return super().__call__(x)
        x = as_f32(x)
        if self.bf16:
            x = to_bf16_bits(x)
        y = aligned_empty((x.shape[0], self.out_width), self.out_dtype)
        self._run(x, y, self._scratch(x.shape[0]) if self._scratch else None)
        return from_bf16_bits(y) if self.bf16 else y

    def to_numpy(self, y):
        return from_bf16_bits(y) if self.bf16 else np.array(y, dtype=np.float32, copy=True)


# ------------------------------------------------------------------- the bucketed FFF schedule

def l2_bytes() -> int:
    """One core's L2 cache, from sysfs (1 MiB where it cannot be read)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(root.glob("index*")):
            if (idx / "level").read_text().strip() == "2":
                size = (idx / "size").read_text().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return 1 << 20


def choose_top_levels(depth: int, width: int, dout: int) -> int:
    """Phase-1 depth S of the bucketed schedule: balance the top levels' W1 rows (phase 1's working
    set) against one subtree's W1 and W2 rows (phase 2's), the smaller S on a tie. The centre of the
    search on every machine, and the choice of the Numba kernel, which is not tuned."""
    best, best_s = None, 1
    for s in range(1, depth + 1):
        top = ((1 << s) - 1) * width
        sub = ((2 << (depth - s)) - 1) * (width + dout)
        if best is None or max(top, sub) < best:
            best, best_s = max(top, sub), s
    return best_s


def top_level_space(depth: int, width: int, dout: int) -> list[int]:
    """Phase-1 depths worth trying: the balanced one and two either side (a larger L2 favours a
    smaller S: bigger subtrees that still fit, fewer phase-1 levels)."""
    s0 = choose_top_levels(depth, width, dout)
    return [s for s in range(s0 - 2, s0 + 3) if 1 <= s < depth]


def coordinate_search(space: dict[str, list], start: dict, measure: Callable[[dict], float],
                      passes: int = 2, rounds: int = 3) -> tuple[dict, list]:
    """Minimise ``measure(params)`` one parameter at a time, ``passes`` times over the parameters.
    Each parameter's values are measured in turn, ``rounds`` times round-robin, and the fastest of
    each value's rounds decides: a co-tenant that takes a core for a while slows every value alike
    rather than the one that happened to run then. Returns the best and every trial."""
    best, trials = dict(start), []
    for _ in range(passes):
        changed = False
        for key, values in space.items():
            if len(values) < 2:
                continue
            t = {v: float("inf") for v in values}
            for _ in range(rounds):
                for v in values:
                    t[v] = min(t[v], measure(best | {key: v}))
            trials += [(best | {key: v}, t[v]) for v in values]
            pick = min(values, key=lambda v: (t[v], v != best[key]))
            changed |= pick != best[key]
            best[key] = pick
        if not changed:
            break
    return best, trials


def timed_min(fn: Callable[[], None], calls: int = 3) -> float:
    """The fastest of ``calls`` calls after one warm-up call: a tuning decision compares what a
    configuration can do, and co-tenant noise only ever adds time."""
    fn()
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class TuneCache:
    """Tuned parameters kept as JSON beside a build (one file per build, keyed by the case's shape,
    dtype and threads), so a kernel is tuned once per machine and build, not once per process."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "tune.json"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict | None:
        return self._read().get(key)

    def put(self, key: str, value: dict) -> None:
        data = self._read() | {key: value}
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)  # atomic: a concurrent reader sees the old or the new file
        except OSError:
            pass  # a read-only cache still works, it just tunes again next time
