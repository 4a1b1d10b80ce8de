"""CUDA C++ backends: the paper's naive level (csrc/fff_cuda.cu) and fffbench's optimized FFF
(v4 in csrc/fff_cuda_v4.cu by default; the per-row pipelines v1-v3 in csrc/fff_cuda.cu).

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
SOURCE_V4 = "fff_cuda_v4.cu"
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


def _lib_v4():
    lib = load(SOURCE_V4, _arch())
    lib.fff_v4_supported.argtypes = [I] * 5 + [ctypes.c_char_p, I]
    lib.fff_v4_plan.restype = VP
    lib.fff_v4_plan.argtypes = ([I] * 5 + [VP] * 4 + [I, ctypes.POINTER(I), ctypes.POINTER(I), ctypes.POINTER(VP),
                                ctypes.POINTER(VP), VP] + [I] * 5 + [ctypes.POINTER(I)] * 2 + [I, I, I, I, I, VP, ctypes.POINTER(I)])
    lib.fff_v4_run.argtypes = [VP] * 4
    lib.fff_v4_free.argtypes = [VP]
    lib.fff_v4_plan_flags.argtypes = [VP]
    lib.fff_v4_probe.argtypes = [I] * 3 + [VP] + [I] * 3 + [VP, VP]
    lib.fff_v4_wprobe.argtypes = [I, VP, VP, I, I, VP]
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


#: kernel pipelines of FffOptimized, by the mode number the v1-v3 launcher takes (v4 has its own)
VARIANTS = {"v2-staged": 0, "v1": 1, "v3": 2, "v4": 4}
#: v4: batches up to SMALL_MAX[dtype] rows take a one-launch path (no sort): a block of 16 warps per
#: row up to TINY_MAX rows (4 levels per dependent round), else a warp per row. Chosen from H200
#: measurements (notes/cuda-kernel.md): the staged path's three launches and per-block chains cost
#: more than per-row weight loads until about 8192 rows in fp32 and 4096 in bf16.
SMALL_MAX, TINY_MAX = {"float32": 8192, "bfloat16": 4096}, 256
#: v4 staged defaults: L2 hints (x evict-last in the first stages, evict-first in the last) and
#: warps per 16-row tile for the first / middle / last stage
HINTS, KSPLIT = (1, 2), (2, 1, 1)
#: v4: levels per stage of the staged path (15 nodes: one 16-wide MMA tile)
STAGE_LEVELS = 4
#: v4: the staged path's slot lists hold 2^level * batch ints per stage; above this it falls back to v3
MAX_SLOT_INTS = 1 << 29


def v4_stages(levels: int) -> list[tuple[int, int]]:
    """(first level, levels) of each stage of the v4 staged path."""
    return [(l0, min(STAGE_LEVELS, levels - l0)) for l0 in range(0, levels, STAGE_LEVELS)]


class _V4Plan:
    """A v4 plan for one batch size: the C plan and the workspace tensors it points into."""

    def __init__(self, lib, ptr, tensors, text):
        self.lib, self.ptr, self.tensors, self.text = lib, ptr, tensors, text

    def __del__(self):
        if self.ptr and self.lib is not None:
            self.lib.fff_v4_free(self.ptr)
            self.ptr = None


class FffOptimized:
    """Workspaces per batch size and the launch of the optimized FFF pipeline.

    Variants (all checked against the float64 reference; notes/cuda-kernel.md has the timings):
    ``v4`` (default) shares weight loads across rows: the levels are cut into stages of 4, rows are
    counting-sorted by subtree before each stage, a block loads one subtree's weights into shared
    memory once and each warp computes 16 rows x 15 nodes of logits as one tensor-core product
    (3xTF32 in float32, bf16 MMA in bfloat16), then the last stage computes the output as one more
    product over the tile's shared path and subtree nodes; batches up to ``small_max`` rows take a
    one-launch path (a warp per row, ``spec`` levels computed together per round). Shapes v4 does
    not cover (several trees, other widths) run v3. ``v1`` routes the top levels with one warp per
    row, sorts rows by subtree, then one warp per row walks the deep levels and accumulates the
    output; ``v2-staged`` is v1 with the top levels and each bucket's subtree in shared memory;
    ``v3`` walks ``rows_per_warp`` rows per warp in lockstep and accumulates the output in a
    separate embedding-bag pass.
    """

    def __init__(self, layer, weights, device, dtype, rows_per_block: int = 64, split: int | None = None,
                 variant: str = "v4", rows_per_warp: int = 1, small_max: int | None = None, tiny_max: int = TINY_MAX,
                 spec: int = 1,
                 pdl: bool = False, w1_bulk: bool = True, colsplit: bool = False, hints: tuple[int, int] = HINTS, tiles: tuple[int, int, int] = (4, 4, 4),
                 ksplit: tuple[int, int, int] = KSPLIT, xdepth: int = 4, xgroup: int = 1, w1first: bool = False,
                 trace: bool = False):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.layer, self.lib = layer, _lib()
        self.w = weights_to(weights, device, dtype)
        self.dtype = dtype
        self.code = {"float32": 0, "bfloat16": 1}[dtype]
        self.rows_per_block, self.split = rows_per_block, split
        self.variant, self.mode, self.rows_per_warp = variant, VARIANTS[variant], rows_per_warp
        self.work: dict[int, tuple] = {}
        self.fast = ctypes.c_int(0)
        self.small_max = SMALL_MAX.get(dtype, 4096) if small_max is None else small_max
        self.tiny_max, self.spec = tiny_max, spec
        self.pdl, self.hints, self.tiles, self.ksplit = pdl, tuple(hints), tuple(tiles), tuple(ksplit)
        self.trace, self.w1first = trace, w1first
        # staged path: W1 rows by cp.async.bulk on an mbarrier (sm_90+; else the cp.async fill), the
        # default since it measured -5 us fp32 on an H200 (bf16 unchanged; notes/cuda-kernel.md)
        self.w1_bulk = w1_bulk
        # staged path: the last stage's output split over y's columns, one W2 ring per warp (not with
        # a k-split last stage); off by default: no faster on an H200, the output phase is bound by
        # y's scattered writes, not by its chain of ring steps (notes/cuda-kernel.md)
        self.colsplit = colsplit
        self.xdepth, self.xgroup = xdepth, xgroup
        self.v4_reason = None
        self.plans: dict[int, _V4Plan | None] = {}
        self.last = None  # what the last call ran, for describe()
        if variant == "v4":
            self.mode = VARIANTS["v3"]  # what runs where v4 does not apply
            self.lib4 = _lib_v4()
            why = ctypes.create_string_buffer(128)
            if self.lib4.fff_v4_supported(self.code, layer.width, layer.dout, layer.trees, layer.depth, why, 128):
                self.v4_reason = why.value.decode()

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

    def v4_plan(self, B: int, device) -> _V4Plan | None:
        """The v4 plan for batch ``B`` (made once, outside the timed call), None where v3 runs it."""
        import torch

        if B in self.plans:
            return self.plans[B]
        lay, L = self.layer, self.layer.levels
        small = 2 if self.tiny_max >= B else int(self.small_max >= B)
        stages = v4_stages(L)
        slot_ints = sum((1 << l0) * B for l0, _ in stages[1:])
        if not small and slot_ints > MAX_SLOT_INTS:
            self.plans[B] = None
            return None
        i32 = torch.int32
        tensors = {"acts": torch.empty(max(1, B * L), device=device), "done": torch.zeros(8, dtype=i32, device=device)}
        if self.trace:
            tensors["trace"] = torch.zeros(8 * 1024 * 8, dtype=torch.int64, device=device)
        cnt, slots = [None], [None]
        if not small:
            for s, (l0, _) in enumerate(stages[1:], 1):
                tensors[f"cnt{s}"] = torch.zeros(1 << l0, dtype=i32, device=device)
                tensors[f"slots{s}"] = torch.empty((1 << l0) * B, dtype=i32, device=device)
                cnt.append(tensors[f"cnt{s}"].data_ptr())
                slots.append(tensors[f"slots{s}"].data_ptr())
        n = len(stages)
        l0s = (I * n)(*[a for a, _ in stages])
        nlev = (I * n)(*[b for _, b in stages])
        cnts = (VP * n)(*cnt[:n])
        slotp = (VP * n)(*slots[:n])
        err = ctypes.c_int(0)
        w = self.w
        ptr = self.lib4.fff_v4_plan(self.code, B, lay.width, lay.dout, L, _ptr(w["w1"]), _ptr(w["b1"]), _ptr(w["w2"]),
                                    _ptr(tensors["acts"]), n, l0s, nlev, cnts, slotp, _ptr(tensors["done"]), small,
                                    self.spec, int(self.pdl), self.hints[0], self.hints[1], (I * 3)(*self.tiles),
                                    (I * 3)(*self.ksplit), self.xdepth, self.xgroup, int(self.w1first),
                                    int(self.w1_bulk), int(self.colsplit), _ptr(tensors["trace"]) if self.trace else None,
                                    ctypes.byref(err))
        if not ptr:
            raise RuntimeError(f"fff_v4_plan failed: error {err.value}")
        if small == 2:
            text = "v4 one-launch path (a block of 16 warps per row, 4 levels per round, no sort)"
        elif small:
            text = f"v4 one-launch path (warp per row, {self.spec} levels per round, no sort)"
        else:
            bounds = ", ".join(f"[{a},{a + b})" for a, b in stages)
            flags = self.lib4.fff_v4_plan_flags(ptr)
            mma = "3xTF32" if self.dtype == "float32" else "bf16"
            text = (f"v4 staged: stages {bounds}, rows counting-sorted by subtree before each, {mma} tensor-core "
                    f"logits and output, blocks of {'/'.join(map(str, self.tiles))} tiles of 16 rows (first/middle/last"
                    f" stages), {'/'.join(map(str, self.ksplit))} warps per tile" + (", PDL" if self.pdl else "")
                    + (", x kept in L2 for the later stages (evict-last, then evict-first)" if self.hints == (1, 2) else
                       f", L2 hints {self.hints}" if any(self.hints) else "")
                    + (f", x prefetch {self.xdepth} k-blocks in groups of {self.xgroup}" if self.xdepth != 4 else "")
                    + (", W1 rows in before x is requested" if self.w1first else "")
                    + ((", W1 rows by bulk copy (one cp.async.bulk per row on an mbarrier)"
                        if flags & 1 else
                        ", W1 bulk copy asked but not applied (needs sm_90 and 16-byte aligned W1): cp.async")
                       if self.w1_bulk else "")
                    + ((", output split over y's columns (a W2 ring per warp)" if flags & 2 else
                        ", column-split output asked but not applied (k-split last stage)") if self.colsplit else ""))
        plan = self.plans[B] = _V4Plan(self.lib4, ptr, tensors, text)
        return plan

    def describe(self) -> str:
        if self.variant == "v4" and self.v4_reason is None:
            parts = []
            for b, plan in self.plans.items():
                parts.append(f"B={b}: " + (plan.text if plan else "v3 (v4 workspace too large)"))
            return "; ".join(parts) if parts else "v4"
        width = self.fast.value
        path = f"16-byte vector path ({width} per lane)" if width else "generic kernel (any width)"
        splits = ", ".join(f"B={b}: split {w[0]}" for b, w in self.work.items())
        rows = f", {self.rows_per_warp} rows per warp" if self.mode == VARIANTS["v3"] else ""
        name = "v3" if self.mode == VARIANTS["v3"] else self.variant
        why = f"v4 not applicable ({self.v4_reason}): " if self.v4_reason else ""
        return f"{why}{path}; {splits}; {name}{rows}"

    def __call__(self, x):
        import torch

        B, lay = x.shape[0], self.layer
        if self.variant == "v4" and self.v4_reason is None and B > 0:
            plan = self.v4_plan(B, x.device)
            if plan is not None:
                y = torch.empty(B, lay.dout, device=x.device, dtype=x.dtype)
                err = self.lib4.fff_v4_run(plan.ptr, _ptr(x), _ptr(y), _stream())
                if err != -1:  # -1: a misaligned buffer, which the v3 path below handles
                    _check(err, "fff_v4")
                    return y
        return self._v123(x)

    def _v123(self, x):
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
    """fffbench's CUDA FFF (v4): one weight load per 16 rows, logits and output on tensor cores.

    Rows are counting-sorted by subtree before each stage of 4 levels; a block loads one subtree's
    weights once and computes its rows' logits and outputs as small tensor-core products; small
    batches take a one-launch path."""
    return CudaKernel(FffOptimized(layer, weights, device, dtype, variant="v4"), device, dtype)


@register_backend("fff-cuda-v3", family="fff", level="optimized", devices=("cuda",), dtypes=("float32", "bfloat16"),
                  available=cuda_toolkit_available)
def build_fff_v3(layer, weights, *, device, dtype):
    """The v3 CUDA FFF (baseline): a warp per row walks the tree, each row loading its own weights.

    The top levels are walked, rows sorted by subtree, the deep levels walked in sorted order, then
    the output accumulated in an embedding-bag pass."""
    return CudaKernel(FffOptimized(layer, weights, device, dtype, variant="v3"), device, dtype)
