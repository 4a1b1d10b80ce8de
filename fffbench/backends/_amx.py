"""fff-c-opt's bf16 path on AMX tiles (fffc_amx.c): which layers and CPUs it serves, its plan, and
the weights packed in the tiles' layout at build.

A block of at most four tree levels has at most 15 nodes, one 16-column tile of W1; a tile product
gives all 15 logits of 16 rows that share the block's subtree, of which each row uses up to four.
The output is a product too: for the rows of one last-block subtree, A (16 rows x 32 activations:
the ancestors', then the block's nodes', zero where not visited) times the 32 W2 rows those
columns name. Both weights are packed per subtree as tdpbf16ps reads its second operand: 16 pairs
of consecutive K values x 16 columns x 2.
"""
from __future__ import annotations

import ctypes

import numpy as np

from fffbench.backends import _cbuild
from fffbench.backends._cpu import resident, zeros_resident

MAX_BLOCKS = 4  # AMX_MAXB in fffc_amx.c
#: tuned: rows per phase-1 group (consecutive rows through every block but the last; the group's x
#: rows and its stages stay in L2) and at most per phase-2 unit (one last-block subtree's rows)
GROUPS = [128, 256, 512]
CHUNKS = [64, 256, 1024]
#: tuned: fffc_amx_plan.pf's bits (prefetch of the next unit, phase 1's staging copy)
PREFETCH = [0, 1, 2, 3]
#: fff-c-opt's parameters of this path, the start of its search: amx (take it), agroup and chunk
#: (rows per phase-1 group, at most per phase-2 unit), amxpf (fffc_amx_plan.pf)
DEFAULTS = {"amx": 0, "agroup": 256, "chunk": 256, "amxpf": 1}
SPACE = {"amx": [0, 1], "agroup": GROUPS, "chunk": CHUNKS, "amxpf": PREFETCH}
#: batches from which the path is taken where tuning chose it (below, the vdpbf16ps kernel)
MIN_ROWS = 1024


class AmxPlan(ctypes.Structure):
    """fffc_amx_plan in fffc_amx.c."""

    _fields_ = [(n, ctypes.c_long) for n in ("d", "dout", "D")] + \
        [(n, ctypes.c_void_p) for n in ("b1", "w1p", "w2p")] + \
        [(n, ctypes.c_int) for n in ("nb", "nthreads", "group", "chunk", "pf")] + [("bl", ctypes.c_int * MAX_BLOCKS)]


def blocks_for(levels: int) -> list[int]:
    """Levels per block: as few blocks of at most four levels as cover the tree, as even as possible
    (12 -> 4 4 4, 10 -> 4 3 3, 6 -> 3 3)."""
    nb = -(-levels // 4)
    return [levels // nb + (1 if i < levels % nb else 0) for i in range(nb)]


def unsupported(layer, dtype: str) -> str | None:
    """Why the AMX path cannot run this layer here (None: it can)."""
    if dtype != "bfloat16":
        return "AMX path is bf16 only"
    build = _cbuild.load()
    if "amx" not in build.isa:
        return "no AMX tiles in this build's target"
    if layer.trees != 1 or not 5 <= layer.levels <= 4 * MAX_BLOCKS:
        return "AMX path: one tree of 5 to 16 levels"
    if layer.width % 32 or layer.dout % 32:
        return "AMX path: width and output width multiples of 32"
    bl = blocks_for(layer.levels)
    if sum(bl[:-1]) + (1 << bl[-1]) - 1 > 32:
        return "AMX path: the last block's ancestors and nodes exceed 32"
    if build.lib.fffc_amx_init() != 0:
        return "the OS refused the AMX register state"
    return None


def _block_nodes(lb: int, nl: int) -> np.ndarray:
    """[2^lb, 16]: the heap index of each subtree's local node m (its level lb + k, offset j), -1 past
    the block's 2^nl - 1 nodes."""
    root = (1 << lb) - 1 + np.arange(1 << lb)
    out = np.full((1 << lb, 16), -1, dtype=np.int64)
    for m in range((1 << nl) - 1):
        k = (m + 1).bit_length() - 1
        out[:, m] = ((root + 1) << k) - 1 + (m - ((1 << k) - 1))
    return out


def _gather(w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    g = w[np.maximum(idx, 0)]
    g[idx < 0] = 0
    return g


def pack_w1(w1: np.ndarray, blocks: list[int]) -> np.ndarray:
    """W1 (bf16 bits, N x d) as tiles: block by block, subtree by subtree, d/32 tiles of 16 x 16 x 2."""
    d, parts, lb = w1.shape[1], [], 0
    for nl in blocks:
        g = _gather(w1, _block_nodes(lb, nl))  # S x 16 nodes x d
        parts.append(g.reshape(g.shape[0], 16, d // 32, 16, 2).transpose(0, 2, 3, 1, 4).reshape(-1))
        lb += nl
    return np.concatenate(parts)


def pack_w2(w2: np.ndarray, blocks: list[int]) -> np.ndarray:
    """W2 (bf16 bits, N x dout) per last-block subtree: its 32 product rows (ancestors by level, the
    block's nodes, zeros) as dout/16 tiles of 16 pairs x 16 columns x 2."""
    lb, nl, dout = sum(blocks[:-1]), blocks[-1], w2.shape[1]
    root = (1 << lb) - 1 + np.arange(1 << lb)
    idx = np.full((1 << lb, 32), -1, dtype=np.int64)
    for k in range(lb):
        idx[:, k] = ((root + 1) >> (lb - k)) - 1
    idx[:, lb:lb + 16] = _block_nodes(lb, nl)
    g = _gather(w2, idx)  # S x 32 x dout
    return g.reshape(g.shape[0], 16, 2, dout // 16, 16).transpose(0, 3, 1, 4, 2).reshape(-1)


def path_for(layer, weights, bf16: bool, threads: int) -> tuple[AmxPath | None, str | None]:
    """(the AMX path of a kernel with these packed weights (w1, b1, w2), None) or (None, why not)."""
    reason = unsupported(layer, "bfloat16" if bf16 else "float32")
    return (None, reason) if reason else (AmxPath(layer, *weights, threads), None)


def impl_note(path: AmxPath | None, reason: str | None, params: dict) -> str:
    """fff-c-opt's impl words for this path: from which batch it runs and how, or why it does not."""
    if path and params["amx"]:
        return f"; from B={MIN_ROWS}: {path.describe()}"
    return f"; AMX path not taken: {reason}"


class AmxPath:
    """The packed weights, the plan and the per-batch scratch of the AMX path of one kernel."""

    def __init__(self, layer, w1, b1, w2, threads: int, group: int = 256, chunk: int = 256):
        self.blocks = blocks_for(layer.levels)
        self.w1p = resident(pack_w1(w1, self.blocks))
        self.w2p = resident(pack_w2(w2, self.blocks))
        self.b1, self.threads, self.layer = b1, threads, layer
        bl = (ctypes.c_int * MAX_BLOCKS)(*self.blocks)
        self.plan = AmxPlan(layer.width, layer.dout, layer.depth, b1.ctypes.data, self.w1p.ctypes.data,
                            self.w2p.ctypes.data, len(self.blocks), threads, group, chunk, 1, bl)
        self._pp = ctypes.c_void_p(ctypes.addressof(self.plan))
        self._fn = _cbuild.load().lib.fff_amx_bucket

    def set(self, group: int, chunk: int, prefetch: int) -> None:
        self.plan.group, self.plan.chunk, self.plan.pf = int(group), int(chunk), int(prefetch)

    def serves(self, params: dict, n: int) -> bool:
        """Whether a batch of n rows takes this path under fff-c-opt's parameters (32-bit row indices)."""
        return bool(params["amx"]) and n >= MIN_ROWS and n * self.layer.levels < 2 ** 31

    def describe(self) -> str:
        p = self.plan
        return (f"bf16 on AMX tiles, blocks {'+'.join(map(str, self.blocks))}, phase-1 groups of {p.group} rows, "
                f"units of at most {p.chunk}, prefetch {p.pf}")

    def scratch(self, n: int) -> tuple:
        """perm, start, stage, work for n rows (nid and act come with the kernel's scratch): the
        sizes fff_amx_bucket documents."""
        nb, p, rowb = len(self.blocks), self.plan, self.layer.width * 2
        T, m = 1 << sum(self.blocks[:-1]), max(p.group, p.chunk)
        start = np.zeros(2 * T + 1 + 3 * (T + n // p.chunk + 2), np.int64)
        stage = zeros_resident(self.threads * nb * (m + 64) * rowb, np.uint8)
        work = zeros_resident(self.threads * 4 * m * (nb + 1), np.int32)
        return zeros_resident(n, np.int32), start, stage, work

    def run(self, x, y, nid, act, s) -> None:
        perm, start, stage, work = s
        rc = self._fn(self._pp, x.ctypes.data, y.ctypes.data, x.shape[0], nid.ctypes.data, act.ctypes.data,
                      perm.ctypes.data, start.ctypes.data, stage.ctypes.data, work.ctypes.data)
        if rc:
            raise RuntimeError("fff_amx_bucket: " + ("no AMX in this build" if rc == -1 else
                                                     "batch x levels beyond 32-bit indices"))

