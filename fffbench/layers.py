"""Layer specifications, seeded weights and the float64 references.

The FFF semantics are pinned here once (see the brief): heap-ordered binary trees, every node a
neuron, exact erf GELU, ``n_{l+1} = 2 n_l + 1 + [z > 0]`` and the sum over K trees. Every backend
is checked against :meth:`FFF.reference`, so this file is the definition of "correct".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf

__all__ = ["FF", "FFF", "INPUT_KINDS", "gelu64", "make_input"]

INPUT_KINDS = ("gaussian", "identical", "zeros")


def gelu64(z: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in float64 (numpy has no erf; scipy's is vectorised and accurate to ~1 ulp)."""

    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), salt])


@dataclass(frozen=True)
class FF:
    """Dense feedforward: ``y = GELU(x W1^T + b1) W2`` with hidden width ``hidden``."""

    width: int = 768
    hidden: int = 3072
    out_width: int | None = None
    bias: bool = True
    family: str = field(default="ff", init=False)

    def __post_init__(self):
        _check_positive(width=self.width, hidden=self.hidden, out_width=self.dout)

    @property
    def dout(self) -> int:
        return self.width if self.out_width is None else self.out_width

    @property
    def neurons_total(self) -> int:
        return self.hidden

    @property
    def neurons_used(self) -> int:
        return self.hidden

    @property
    def label(self) -> str:
        return f"FF d={self.width} H={self.hidden}"

    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        """float32 weights scaled so pre-activations are O(1) (std 1/sqrt(width))."""
        r = _rng(seed, 1)
        w1 = (r.standard_normal((self.hidden, self.width), dtype=np.float32) / np.float32(math.sqrt(self.width)))
        b1 = (r.standard_normal(self.hidden, dtype=np.float32) * np.float32(0.1)) if self.bias else np.zeros(self.hidden, np.float32)
        w2 = r.standard_normal((self.hidden, self.dout), dtype=np.float32) / np.float32(math.sqrt(self.hidden))
        return {"w1": w1, "b1": b1, "w2": w2}

    def reference(self, x, weights) -> np.ndarray:
        x64 = _as_f64(x, self.width)
        w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        return gelu64(x64 @ w["w1"].T + w["b1"]) @ w["w2"]

    def flops(self, batch: int) -> float:
        """Multiply-adds of both matmuls, counted as 2 FLOPs each (GELU not counted)."""
        return 2.0 * batch * self.hidden * (self.width + self.dout)

    def compulsory_bytes(self, batch: int, itemsize: int = 4) -> float:
        """x read once, y written once, every weight read once."""
        weights = self.hidden * (self.width + 1 + self.dout)
        return float(itemsize * (batch * (self.width + self.dout) + weights))


@dataclass(frozen=True)
class FFF:
    """Fast feedforward: ``trees`` balanced binary trees of ``depth`` (depth+1 levels, heap order)."""

    width: int = 768
    depth: int = 11
    trees: int = 1
    out_width: int | None = None
    bias: bool = True
    family: str = field(default="fff", init=False)

    def __post_init__(self):
        _check_positive(width=self.width, trees=self.trees, out_width=self.dout)
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {self.depth!r}")

    @property
    def dout(self) -> int:
        return self.width if self.out_width is None else self.out_width

    @property
    def nodes(self) -> int:
        return 2 ** (self.depth + 1) - 1

    @property
    def levels(self) -> int:
        return self.depth + 1

    @property
    def neurons_total(self) -> int:
        return self.trees * self.nodes

    @property
    def neurons_used(self) -> int:
        return self.trees * self.levels

    @property
    def label(self) -> str:
        return f"FFF d={self.width} {self.trees}x{self.depth}"

    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        r = _rng(seed, 2)
        K, N, d = self.trees, self.nodes, self.width
        w1 = r.standard_normal((K, N, d), dtype=np.float32) / np.float32(math.sqrt(d))
        b1 = (r.standard_normal((K, N), dtype=np.float32) * np.float32(0.1)) if self.bias else np.zeros((K, N), np.float32)
        w2 = r.standard_normal((K, N, self.dout), dtype=np.float32) / np.float32(math.sqrt(self.neurons_used))
        return {"w1": w1, "b1": b1, "w2": w2}

    def walk(self, x, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float64 walk: visited nodes, logits and noise scales, each of shape (batch, trees, levels).

        The noise scale is ``sqrt(sum_i (x_i w1_i)^2) + |b1|``, to which the random rounding error
        of a logit is proportional; the correctness gate uses it to tell decisive rows from near-ties.
        """
        x64 = _as_f64(x, self.width)
        B = x64.shape[0]
        w1 = np.asarray(weights["w1"], dtype=np.float64)
        b1 = np.asarray(weights["b1"], dtype=np.float64)
        nodes = np.zeros((B, self.trees, self.levels), dtype=np.int64)
        logits = np.zeros((B, self.trees, self.levels))
        scales = np.zeros((B, self.trees, self.levels))
        for k in range(self.trees):
            n = np.zeros(B, dtype=np.int64)
            for lvl in range(self.levels):
                w = w1[k, n]  # (B, d)
                z = np.einsum("bd,bd->b", x64, w) + b1[k, n]
                nodes[:, k, lvl] = n
                logits[:, k, lvl] = z
                xw = x64 * w
                scales[:, k, lvl] = np.sqrt(np.einsum("bd,bd->b", xw, xw)) + np.abs(b1[k, n])
                n = 2 * n + 1 + (z > 0)
        return nodes, logits, scales

    def reference(self, x, weights) -> np.ndarray:
        nodes, logits, _ = self.walk(x, weights)
        return self.output_from_walk(nodes, logits, weights)

    def output_from_walk(self, nodes, logits, weights) -> np.ndarray:
        w2 = np.asarray(weights["w2"], dtype=np.float64)
        act = gelu64(logits)
        y = np.zeros((nodes.shape[0], self.dout))
        for k in range(self.trees):
            y += np.einsum("bl,blo->bo", act[:, k], w2[k][nodes[:, k]])
        return y

    def flops(self, batch: int) -> float:
        """Per visited neuron one dot (width) and one axpy (out_width), 2 FLOPs per multiply-add."""
        return 2.0 * batch * self.neurons_used * (self.width + self.dout)

    def compulsory_bytes(self, batch: int, itemsize: int = 4) -> float:
        """x read once, y written once, the weights of the neurons any row can visit read once.

        For B far above the node count every node is visited, so all weights count; for small B
        only ``B * levels`` nodes per tree can be touched.
        """
        touched = self.trees * min(self.nodes, batch * self.levels)
        return float(itemsize * (batch * (self.width + self.dout) + touched * (self.width + 1 + self.dout)))


def make_input(kind: str, batch: int, width: int, seed: int = 0) -> np.ndarray:
    """float32 input rows. ``identical`` reproduces the reference CPU code's pointer defect (every
    row the same), ``zeros`` its never-initialised buffers."""
    r = _rng(seed, 3)
    if kind == "gaussian":
        return r.standard_normal((batch, width), dtype=np.float32)
    if kind == "identical":
        return np.repeat(r.standard_normal((1, width), dtype=np.float32), batch, axis=0)
    if kind == "zeros":
        return np.zeros((batch, width), dtype=np.float32)
    raise ValueError(f"unknown input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}")


def _as_f64(x, width: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"x must have shape (batch, {width}), got {x.shape}")
    return x


def _check_positive(**values):
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
