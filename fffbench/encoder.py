"""The crammed-BERT encoder of UltraFastBERT: its shapes, its weights and its float64 reference.

The model (``cramming``'s ``ScriptableLM``, as UltraFastBERT trained it): token embedding plus a
scaled sinusoidal position code, a LayerNorm, then ``layers`` pre-LN transformer layers

    h = h + dense(attention(qkv(norm1(h))))        qkv fused, per head [q | k | v], no biases
    h = h + ffn(norm2(h))                          the feedforward: dense FF (BERT) or FFF

and a final LayerNorm; softmax attention over each sequence, no mask, LayerNorm eps 1e-12. The
output here is the final hidden state, one row per token (``batch = sequences x seq_len``); the
MLM head is not part of the benchmark. The feedforward of each layer is an FF or FFF layer in
fffbench's layout, so any backend of either family can be the model's feedforward
(:mod:`fffbench.encoder_kernel`).

Weights come from a checkpoint (:mod:`fffbench.checkpoint`; a BERT encoder takes the checkpoint's
attention, norms and embedding, with dense FF weights of its own) or, without one, are random in
the published shapes with the training code's initialisation (normal, std 0.02; zero biases;
LayerNorms 1 and 0), seeded per part and layer. :func:`reference` is the float64 forward pass,
layer by layer over every token (attention in chunks of sequences), and reports each FFF layer's
walk to a callback (the routing statistics).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fffbench.correctness import walk_margin

MODEL = "crammed-bert"
INIT_STD = 0.02
TOKENS = "tokens"
_CHUNK_SEQUENCES = 16
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class EncoderSpec:
    width: int
    heads: int
    layers: int
    seq_len: int
    vocab: int
    eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def flops(self, batch: int, ffn) -> float:
        """2 FLOPs per multiply-add of the projections, the attention products and the feedforward."""
        d, s = self.width, self.seq_len
        per_token = 2.0 * (3 * d * d + d * d) + 2.0 * 2 * s * d
        return self.layers * (batch * per_token + ffn.flops(batch))

    def compulsory_bytes(self, batch: int, ffn, itemsize: int = 4) -> float:
        """Token ids in, the output out, each touched weight read once (embedding rows of the tokens)."""
        d = self.width
        if ffn.family == "ff":
            ffn_weights = ffn.hidden * (d + 1 + ffn.dout)
        else:
            ffn_weights = ffn.trees * min(ffn.nodes, batch * ffn.levels) * (d + 1 + ffn.dout)
        weights = min(self.vocab, batch) * d + self.layers * (4 * d * d + 4 * d + ffn_weights)
        return float(8 * batch + itemsize * (batch * d + weights))

    def memory_bytes(self, batch: int, ffn) -> dict[str, float]:
        """What a run holds for one encoder case: float32 weights (and one layer's float64 copy),
        token ids, the float64 reference's hidden states and temporaries, and the device copies."""
        d = self.width
        ffn_params = ffn.neurons_total * (d + 1 + ffn.dout)
        weights = float(self.vocab * d + self.layers * (4 * d * d + ffn_params))
        chunk = min(batch, _CHUNK_SEQUENCES * self.seq_len)
        ffn_temps = min(batch, _CHUNK_ROWS) * ffn.hidden if ffn.family == "ff" else batch * (3 * d + 4 * ffn.neurons_used)
        temps = 8.0 * (6 * batch * d + chunk * (4 * d + self.heads * self.seq_len) + ffn_temps)
        return {"weights": 4.0 * weights + 8.0 * (4 * d * d + ffn_params), "input": 8.0 * batch,
                "reference": temps, "device copies": 3.0 * 4 * (weights + 2 * batch * d)}


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 20, *salt])


def _normal(r, shape) -> np.ndarray:
    return r.standard_normal(shape, dtype=np.float32) * np.float32(INIT_STD)


def random_base(spec: EncoderSpec, seed: int) -> dict:
    """Everything but the feedforward, random in the training code's initialisation."""
    d = spec.width
    emb = _normal(_rng(seed, 0), (spec.vocab, d))
    emb[0] = 0.0  # the padding token
    ones, zeros = np.ones(d, np.float32), np.zeros(d, np.float32)
    layers = [{"norm1": (ones, zeros), "norm2": (ones, zeros), "qkv": _normal(_rng(seed, 1, i), (3 * d, d)),
               "qkv_bias": None, "dense": _normal(_rng(seed, 2, i), (d, d)), "dense_bias": None}
              for i in range(spec.layers)]
    return {"embedding": emb, "pos_scale": 1.0 / math.sqrt(d), "emb_norm": (ones, zeros),
            "final_norm": (ones, zeros), "layers": layers}


def checkpoint_base(ckpt, spec: EncoderSpec) -> dict:
    """Everything but the feedforward, from a checkpoint (:class:`fffbench.checkpoint.Checkpoint`)."""
    from fffbench import checkpoint as C

    d = spec.width
    ckpt.require_pre_ln()
    layers = []
    for i in range(spec.layers):
        bias = lambda pattern, n, i=i: ckpt.tensor(pattern.format(i=i), (n,)) if ckpt.has(pattern.format(i=i)) else None
        layers.append({"norm1": ckpt.norm("norm1", i), "norm2": ckpt.norm("norm2", i),
                       "qkv": ckpt.tensor(C.QKV.format(i=i), (3 * d, d), "3 x width, width"),
                       "qkv_bias": bias(C.QKV_BIAS, 3 * d),
                       "dense": ckpt.tensor(C.DENSE.format(i=i), (d, d)), "dense_bias": bias(C.DENSE_BIAS, d)})
    scale = ckpt.tensor(C.POS_SCALE, (1,)) if ckpt.has(C.POS_SCALE) else np.array([1.0 / math.sqrt(d)])
    return {"embedding": ckpt.tensor(C.EMBEDDING, (spec.vocab, d), "vocabulary, width"),
            "pos_scale": float(scale[0]), "emb_norm": ckpt.norm("embedding"), "final_norm": ckpt.norm("final"),
            "layers": layers}


def random_ffn(layer, seed: int, index: int) -> dict:
    """A feedforward layer's weights in the training code's initialisation (layer ``index`` of the model)."""
    r = _rng(seed, 3, index)
    if layer.family == "ff":
        return {"w1": _normal(r, (layer.hidden, layer.width)), "b1": np.zeros(layer.hidden, np.float32),
                "w2": _normal(r, (layer.hidden, layer.dout))}
    K, N = layer.trees, layer.nodes
    return {"w1": _normal(r, (K, N, layer.width)), "b1": np.zeros((K, N), np.float32),
            "w2": _normal(r, (K, N, layer.dout))}


def make_tokens(batch: int, seq_len: int, vocab: int, seed: int) -> np.ndarray:
    """Token ids, (batch / seq_len) sequences of ``seq_len``, uniform over the vocabulary but the padding id."""
    return _rng(seed, 4).integers(1, vocab, size=(batch // seq_len, seq_len), dtype=np.int64)


# --- the float64 reference --------------------------------------------------------------------

def positions(seq_len: int, width: int) -> np.ndarray:
    """The sinusoidal position code (seq_len, width) of ``cramming``'s ScaledSinosoidal, unscaled."""
    pe = np.zeros((seq_len, width))
    pos = np.arange(seq_len, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, width, 2, dtype=np.float64) * (-math.log(10000.0) / width))
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


def layer_norm64(x: np.ndarray, norm, eps: float) -> np.ndarray:
    w, b = (np.asarray(v, dtype=np.float64) for v in norm)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def embed64(spec: EncoderSpec, base: dict, tokens: np.ndarray) -> np.ndarray:
    """(tokens, width): embedding plus scaled position code, normalised."""
    emb = np.asarray(base["embedding"], dtype=np.float64)[tokens]
    emb = emb + base["pos_scale"] * positions(tokens.shape[1], spec.width)
    return layer_norm64(emb, base["emb_norm"], spec.eps).reshape(-1, spec.width)


def _linear64(x, w, b=None) -> np.ndarray:
    y = x @ np.asarray(w, dtype=np.float64).T
    return y if b is None else y + np.asarray(b, dtype=np.float64)


def attention64(spec: EncoderSpec, lw: dict, h: np.ndarray, sequences: int) -> np.ndarray:
    """The attention block's output (tokens, width) for residual stream ``h``: dense(attn(qkv(norm1(h))))."""
    d, H, hn, S = spec.width, spec.heads, spec.head_dim, h.shape[0] // sequences
    a = layer_norm64(h, lw["norm1"], spec.eps).reshape(sequences, S, d)
    out = np.empty((sequences, S, d))
    for s0 in range(0, sequences, _CHUNK_SEQUENCES):
        qkv = _linear64(a[s0:s0 + _CHUNK_SEQUENCES], lw["qkv"], lw["qkv_bias"])
        qkv = qkv.reshape(qkv.shape[0], S, H, 3 * hn).transpose(0, 2, 1, 3)  # (b, heads, S, 3 hn)
        q, k, v = qkv[..., :hn], qkv[..., hn:2 * hn], qkv[..., 2 * hn:]
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hn)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        ctx = (scores / scores.sum(axis=-1, keepdims=True)) @ v                 # (b, heads, S, hn)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(-1, S, d)
        out[s0:s0 + _CHUNK_SEQUENCES] = _linear64(ctx, lw["dense"], lw["dense_bias"])
    return out.reshape(-1, d)


def to64(weights: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def ffn64(ffn, w64: dict, f: np.ndarray, on_walk=None, index: int | None = None):
    """(output, per-row margin) of a feedforward layer in float64 (margin inf for FF)."""
    if ffn.family == "ff":
        out = np.empty((f.shape[0], ffn.dout))
        for r0 in range(0, f.shape[0], _CHUNK_ROWS):
            out[r0:r0 + _CHUNK_ROWS] = ffn.reference(f[r0:r0 + _CHUNK_ROWS], w64)
        return out, np.full(f.shape[0], np.inf)
    nodes, logits, noise = ffn.walk(f, w64)
    if on_walk is not None:
        on_walk(index, f, nodes, logits, noise, w64)
    return ffn.output_from_walk(nodes, logits, w64), walk_margin(logits, noise)


def reference(spec: EncoderSpec, ffn, weights: dict, tokens: np.ndarray, on_walk=None):
    """(y, margin): the float64 encoder output (tokens, width) and each token's smallest FFF logit
    margin over every layer (inf for a BERT encoder). ``on_walk(layer, x, nodes, logits, noise,
    weights)`` receives each FFF layer's float64 walk over all tokens."""
    base = weights["base"]
    sequences = tokens.shape[0]
    h = embed64(spec, base, tokens)
    margin = np.full(h.shape[0], np.inf)
    for i in range(spec.layers):
        lw = base["layers"][i]
        h = h + attention64(spec, lw, h, sequences)
        out, m = ffn64(ffn, to64(weights["ffn"][i]), layer_norm64(h, lw["norm2"], spec.eps), on_walk, i)
        h = h + out
        margin = np.minimum(margin, m)
    return layer_norm64(h, base["final_norm"], spec.eps), margin


__all__ = ["MODEL", "TOKENS", "EncoderSpec", "attention64", "checkpoint_base", "embed64", "ffn64", "layer_norm64",
           "make_tokens", "positions", "random_base", "random_ffn", "reference", "to64"]
