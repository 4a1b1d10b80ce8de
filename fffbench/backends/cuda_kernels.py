"""CUDA C++ backends (csrc/fff_cuda.cu): the paper's naive level and fffbench's optimized FFF.

Built with nvcc at first use (cached per machine), launched through ctypes on torch's current
stream with torch-allocated buffers, so they are timed like any torch op and can be captured in
a CUDA graph. Workspaces are allocated once per batch size, outside the timed call.
"""
from __future__ import annotations

import ctypes
import math

from fffbench.backends._nvcc import find_nvcc, load
from fffbench.backends._torch import TorchKernel, torch_available, weights_to
from fffbench.registry import register_backend

SOURCE = "fff_cuda.cu"
VP, I = ctypes.c_void_p, ctypes.c_int


def cuda_toolkit_available(device: str) -> str | None:
    reason = torch_available(device)
    if reason:
        return reason
    if find_nvcc() is None:
        return "nvcc (the CUDA toolkit) not found: set NVCC or CUDA_HOME"
    return None


def _arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


def _lib():
    lib = load(SOURCE, _arch())
    lib.ff_naive_launch.argtypes = [VP] * 5 + [I] * 4 + [VP]
    lib.fff_naive_launch.argtypes = [VP] * 5 + [I] * 5 + [VP]
    lib.fff_opt_launch.argtypes = [I] + [VP] * 5 + [I] * 7 + [VP] * 7 + [I, I, ctypes.POINTER(I), VP]
    return lib


def _ptr(t) -> int:
    return t.data_ptr()


def _stream() -> int:
    import torch

    return torch.cuda.current_stream().cuda_stream


class CudaKernel(TorchKernel):
    """A ctypes launch wrapped as a torch-style kernel; a non-zero CUDA error code raises."""

    def prepare(self, x):
        return super().prepare(x).contiguous()

    def describe(self) -> str:
        """What the last launch ran (the runner stores it in the row's ``impl``)."""
        describe = getattr(self.fn, "describe", None)
        return describe() if describe else ""


def _check(err: int, what: str):
    if err:
        raise RuntimeError(f"{what}: CUDA error {err}")


@register_backend("ff-cuda-naive", family="ff", level="naive-cuda", devices=("cuda",), dtypes=("float32",),
                  available=cuda_toolkit_available)
def build_ff_naive(layer, weights, *, device, dtype):
    """The paper's naive CUDA FF: one thread per row looping over every neuron (bounds-checked)."""
    import torch

    lib, w = _lib(), weights_to(weights, device, dtype)

    def fn(x):
        B = x.shape[0]
        y = torch.empty(B, layer.dout, device=x.device, dtype=x.dtype)
        _check(lib.ff_naive_launch(_ptr(x), _ptr(w["w1"]), _ptr(w["b1"]), _ptr(w["w2"]), _ptr(y),
                                   B, layer.width, layer.hidden, layer.dout, _stream()), "ff_naive")
        return y

    return CudaKernel(fn, device, dtype)


@register_backend("fff-cuda-naive", family="fff", level="naive-cuda", devices=("cuda",), dtypes=("float32",),
                  available=cuda_toolkit_available)
def build_fff_naive(layer, weights, *, device, dtype):
    """The paper's naive CUDA FFF: one thread per row looping over levels (bounds-checked, any batch)."""
    import torch

    lib, w = _lib(), weights_to(weights, device, dtype)

    def fn(x):
        y = torch.empty(x.shape[0], layer.dout, device=x.device, dtype=x.dtype)
        _check(lib.fff_naive_launch(_ptr(x), _ptr(w["w1"]), _ptr(w["b1"]), _ptr(w["w2"]), _ptr(y), x.shape[0],
                                    layer.width, layer.dout, layer.trees, layer.depth, _stream()), "fff_naive")
        return y

    return CudaKernel(fn, device, dtype)


#: rows per subtree bucket the split level aims for, and the deepest split (2^7 = 128 buckets)
ROWS_PER_BUCKET, MAX_SPLIT = 128, 7


def split_level(batch: int, levels: int) -> int:
    """Route levels before sorting: enough buckets to spread rows, few enough to share weights."""
    if batch < 2 * ROWS_PER_BUCKET:
        return 0
    return min(levels, MAX_SPLIT, int(math.log2(batch / ROWS_PER_BUCKET)))


#: kernel pipelines of FffOptimized, by the mode number the C launcher takes
VARIANTS = {"v2-staged": 0, "v1": 1, "v3": 2}


class FffOptimized:
    """Workspaces per batch size and the launch of the optimized FFF pipeline.

    Variants (all checked against the float64 reference; notes/cuda-kernel.md has the timings):
    ``v1`` routes the top levels with one warp per row, sorts rows by subtree, then one warp per
    row walks the deep levels and accumulates the output; ``v2-staged`` is v1 with the top levels
    and each bucket's subtree in shared memory; ``v3`` walks ``rows_per_warp`` rows per warp in
    lockstep (independent chains in flight, one weight load shared by rows on the same node) and
    accumulates the output in a separate embedding-bag pass. notes/cuda-kernel.md lists what was
    tried beside these (L1 prefetch, two-level speculation, smaller blocks) and what it cost.
    """

    def __init__(self, layer, weights, device, dtype, rows_per_block: int = 64, split: int | None = None,
                 variant: str = "v3", rows_per_warp: int = 1):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.layer, self.lib = layer, _lib()
        self.w = weights_to(weights, device, dtype)
        self.code = {"float32": 0, "bfloat16": 1}[dtype]
        self.rows_per_block, self.split = rows_per_block, split
        self.variant, self.mode, self.rows_per_warp = variant, VARIANTS[variant], rows_per_warp
        self.work: dict[int, tuple] = {}
        self.fast = ctypes.c_int(0)

    def workspace(self, B: int, device):
        import torch

        if B not in self.work:
            K, L = self.layer.trees, self.layer.levels
            s = split_level(B, L) if self.split is None else min(self.split, L)
            nb = 1 << s
            self.work[B] = (s, torch.empty(B * K * L, device=device), torch.empty(B * K * L, dtype=torch.int32, device=device),
                            torch.empty(B * K, dtype=torch.int32, device=device),
                            torch.zeros(nb, dtype=torch.int32, device=device), torch.zeros(nb, dtype=torch.int32, device=device),
                            torch.empty(B, dtype=torch.int32, device=device),
                            torch.zeros(nb + 1, dtype=torch.int32, device=device))
        return self.work[B]

    def describe(self) -> str:
        width = self.fast.value
        path = f"16-byte vector path ({width} per lane)" if width else "generic kernel (any width)"
        splits = ", ".join(f"B={b}: split {w[0]}" for b, w in self.work.items())
        rows = f", {self.rows_per_warp} rows per warp" if self.variant == "v3" else ""
        return f"{path}; {splits}; {self.variant}{rows}"

    def __call__(self, x):
        import torch

        B, lay, w = x.shape[0], self.layer, self.w
        s, acts, nodes, nxt, counts, cursor, perm, offsets = self.workspace(B, x.device)
        y = torch.empty(B, lay.dout, device=x.device, dtype=x.dtype)
        _check(self.lib.fff_opt_launch(self.code, _ptr(x), _ptr(w["w1"]), _ptr(w["b1"]), _ptr(w["w2"]), _ptr(y), B,
                                       lay.width, lay.dout, lay.trees, lay.depth, s, self.rows_per_block,
                                       _ptr(acts), _ptr(nodes), _ptr(nxt), _ptr(counts), _ptr(cursor), _ptr(perm),
                                       _ptr(offsets), self.mode, self.rows_per_warp, ctypes.byref(self.fast),
                                       _stream()), "fff_opt")
        return y


@register_backend("fff-cuda", family="fff", level="optimized", devices=("cuda",), dtypes=("float32", "bfloat16"),
                  available=cuda_toolkit_available)
def build_fff_opt(layer, weights, *, device, dtype):
    """fffbench's CUDA FFF: the top levels walked with several rows per warp, rows counting-sorted
    by subtree, the deep levels walked in sorted order, then the output as an embedding bag."""
    return CudaKernel(FffOptimized(layer, weights, device, dtype), device, dtype)
