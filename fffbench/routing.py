"""Routing statistics of an FFF layer on a batch: where the rows go, computed from the float64 walk.

Properties of a case's weights and inputs, not timings: computed once per FFF case where its
float64 reference is made (the runner; for an encoder case, once per layer of the model, on the
inputs the float64 model gives that layer) and stored as records of their own (``routing.jsonl``).
Per layer, over the batch of ``B`` rows and averaged over the ``K`` trees:

- the leaf histogram (rows per leaf, per tree; stored up to :data:`MAX_LEAVES` leaves), its entropy
  in bits against the uniform ``depth`` bits (``entropy_ratio``; ``log2 B`` bounds it when ``B`` is
  below the leaf count), the effective number of leaves ``2^H``, the largest leaf's share of rows
  and the share of leaves no row reached;
- per level, the distinct nodes the batch visits (``distinct``), the most possible
  (``min(2^level, B)``) and what uniform random routing would visit (``2^l (1 - (1 - 2^-l)^B)``), and
  the largest node's share of the rows (a subtree-bucketing kernel's largest bucket);
- the share of visited logits that are near zero: ``|z| / noise`` at most the correctness gate's
  decisive threshold for float32 and for bfloat16 (such a logit may legitimately flip at that
  precision), and the share of rows with at least one such logit on their path;
- the bf16 path agreement: the share of rows whose path is unchanged when the input, W1 and b1 are
  rounded to bfloat16 (accumulated exactly), as a bf16 kernel with fp32 accumulation would walk.

Pure numpy; :class:`RoutingLog` turns walks into records through a writer it is given.
"""
from __future__ import annotations

import math

import numpy as np

from fffbench.correctness import decisive_threshold

#: leaf histograms with more leaves than this (all trees together) are summarised, not stored
MAX_LEAVES = 65536


def bf16_round(a) -> np.ndarray:
    """Values rounded to the nearest bfloat16 (ties to even), as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return r.view(np.float32)


def paths(x, w1, b1, levels: int) -> np.ndarray:
    """The visited nodes (B, K, levels) of a float64 walk (decisions only: no activations)."""
    x = np.asarray(x, dtype=np.float64)
    w1, b1 = np.asarray(w1, dtype=np.float64), np.asarray(b1, dtype=np.float64)
    B, K = x.shape[0], w1.shape[0]
    nodes = np.zeros((B, K, levels), dtype=np.int64)
    for k in range(K):
        n = np.zeros(B, dtype=np.int64)
        for lvl in range(levels):
            nodes[:, k, lvl] = n
            z = np.einsum("bd,bd->b", x, w1[k, n]) + b1[k, n]
            n = 2 * n + 1 + (z > 0)
    return nodes


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def stats(layer, x, nodes, logits, noise, weights) -> dict:
    """The statistics of the module docstring for one walk (``nodes``, ``logits``, ``noise``: (B, K, levels))."""
    B, K, L = nodes.shape
    D, N = layer.depth, layer.nodes
    visits = np.stack([np.bincount(nodes[:, k, :].ravel(), minlength=N) for k in range(K)])  # (K, N)
    first_leaf = 2 ** D - 1
    leaves = visits[:, first_leaf:]
    ent = [_entropy_bits(leaves[k]) for k in range(K)]
    mean_ent = float(np.mean(ent))
    levels = []
    for lvl in range(L):
        lo, hi = 2 ** lvl - 1, 2 ** (lvl + 1) - 1
        v = visits[:, lo:hi]
        width = hi - lo
        levels.append({"level": lvl, "distinct": float(np.count_nonzero(v, axis=1).mean()),
                       "possible": min(width, B), "uniform": width * (1.0 - (1.0 - 1.0 / width) ** B),
                       "max_share": float((v.max(axis=1) / B).mean()),
                       "right_share": float((logits[:, :, lvl] > 0).mean())})
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.where(noise > 0, np.abs(logits) / noise, np.inf)
    out = {"rows": int(B), "trees": int(K), "depth": int(D), "leaves": int(2 ** D),
           "entropy_bits": mean_ent, "entropy_max_bits": float(min(D, math.log2(B))) if B else 0.0,
           "entropy_ratio": mean_ent / D if D else 1.0, "effective_leaves": float(np.mean([2.0 ** e for e in ent])),
           "max_leaf_share": float((leaves.max(axis=1) / B).mean()),
           "empty_leaf_share": float((leaves == 0).mean()), "levels": levels}
    for dtype, tag in (("float32", "fp32"), ("bfloat16", "bf16")):
        near = margin <= decisive_threshold(dtype, layer.width)
        out[f"near_zero_{tag}"] = float(near.mean())
        out[f"near_tie_rows_{tag}"] = float(near.reshape(B, -1).any(axis=1).mean())
    bf = paths(bf16_round(x), bf16_round(weights["w1"]), bf16_round(weights["b1"]), L)
    out["bf16_path_agreement"] = float((bf == nodes).reshape(B, -1).all(axis=1).mean())
    if K * leaves.shape[1] <= MAX_LEAVES:
        out["leaf_counts"] = leaves.astype(int).tolist()
    return out


class RoutingLog:
    """Records of routing statistics: ``hook(case, key, fields)`` gives the walk callback for a
    reference computation (None when every walk of that case is recorded); each walk becomes one
    record ``fields | {key, layer_index} | stats`` passed to ``write``."""

    def __init__(self, write, known=()):
        self.write, self.known = write, set(known)

    def hook(self, case, key: str, fields: dict):
        if case.family != "fff":
            return None
        if not case.model and key in self.known:
            return None
        layer = case.layer

        def on_walk(index, x, nodes, logits, noise, weights):
            k = key if not case.model else f"{key}:{index}"
            if k in self.known:
                return
            rec = fields | {"key": k, "layer_index": index} | stats(layer, x, nodes, logits, noise, weights)
            self.write(rec)
            self.known.add(k)

        return on_walk


__all__ = ["MAX_LEAVES", "RoutingLog", "bf16_round", "paths", "stats"]
