"""The crammed-BERT encoder as a kernel: torch for everything but the feedforward, which is the row's
backend (one built kernel per model layer, each with that layer's weights).

Attention is the fused QKV projection (per head ``[q | k | v]``, as the checkpoint stores it),
``torch.nn.functional.scaled_dot_product_attention`` (no mask) and the output projection; LayerNorms
and residual adds are torch's. Everything runs on the case's device in the case's dtype. A
feedforward kernel gets the normalised hidden states as ``(tokens, width)`` in its own form without
a copy where it can: torch and CUDA kernels take the tensor; the native CPU kernels
(:class:`fffbench.backends._cpu.NativeKernel`) a numpy view of it (bf16 as its bit pattern), and
their output is wrapped as a tensor, not copied. Other kernels go through ``prepare``/``to_numpy``.

The first call keeps, for :data:`GATE_TOKENS` tokens of whole sequences (the first and the last
sequences), every layer's input, its feedforward's input and output: the correctness gate
(:mod:`fffbench.encoder_gate`) checks each layer against float64 on exactly what this call computed.
"""
from __future__ import annotations

import numpy as np

from fffbench.registry import Kernel

#: tokens (whole sequences) of the first call whose per-layer states the gate checks
GATE_TOKENS = 1024
_TORCH_CACHE: dict = {}


def _tdtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _tensors(base: dict, spec, device: str, dtype: str) -> dict:
    """The non-feedforward weights as torch tensors, once per process for each (weights, device, dtype)."""
    import torch

    from fffbench.encoder import positions

    key = (id(base), device, dtype)
    if key in _TORCH_CACHE:
        return _TORCH_CACHE[key][1]
    td = _tdtype(dtype)

    def t(a):
        return None if a is None else torch.as_tensor(np.array(a, dtype=np.float32)).to(device=device, dtype=td)

    out = {"embedding": t(base["embedding"]), "emb_norm": tuple(map(t, base["emb_norm"])),
           "final_norm": tuple(map(t, base["final_norm"])),
           "pos": t(base["pos_scale"] * positions(spec.seq_len, spec.width)),
           "layers": [{"norm1": tuple(map(t, lw["norm1"])), "norm2": tuple(map(t, lw["norm2"])), "qkv": t(lw["qkv"]),
                       "qkv_bias": t(lw["qkv_bias"]), "dense": t(lw["dense"]), "dense_bias": t(lw["dense_bias"])}
                      for lw in base["layers"]]}
    _TORCH_CACHE[key] = (base, out)  # the base is kept alive with its tensors, so its id stays its own
    return out


def ffn_caller(kernel, device: str, dtype: str):
    """``call(x: Tensor (tokens, width)) -> Tensor`` running ``kernel`` on the model's hidden states."""
    import torch

    from fffbench.backends._cpu import NativeKernel

    td = _tdtype(dtype)
    if isinstance(kernel, NativeKernel):
        if kernel.bf16:
            def native_bf16(x):
                bits = x.contiguous().view(torch.int16).numpy().view(np.uint16)
                return torch.from_numpy(kernel.run(bits).view(np.int16)).view(torch.bfloat16)
            return native_bf16

        def native(x):
            return torch.from_numpy(kernel.run(x.contiguous().numpy()))
        return native

    def other(x):
        y = kernel.run(kernel.prepare(x))
        if not isinstance(y, torch.Tensor):
            y = torch.from_numpy(np.ascontiguousarray(kernel.to_numpy(y), dtype=np.float32))
        return y.to(device=x.device, dtype=td)
    return other


class EncoderKernel(Kernel):
    """The encoder of ``spec`` with ``ffns[i]`` as layer ``i``'s feedforward; input token ids
    (sequences, seq_len), output the final hidden states (tokens, width)."""

    def __init__(self, spec, weights: dict, ffns: list, device: str, dtype: str, ffn_layer):
        self.spec, self.weights, self.ffns, self.device, self.dtype = spec, weights, ffns, device, dtype
        self.ffn_layer = ffn_layer
        self.t = _tensors(weights["base"], spec, device, dtype)
        self.calls = [ffn_caller(k, device, dtype) for k in ffns]
        self.record, self.states = True, None

    def describe(self) -> str:
        inner = self.ffns[0].describe() if self.ffns else ""
        s = self.spec
        return (f"crammed-BERT encoder: {s.layers} layers, {s.heads} heads, sequences of {s.seq_len}, torch sdpa"
                + (f"; feedforward: {inner}" if inner else ""))

    def prepare(self, x):
        import torch

        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.int64))
        return t.to(device=self.device, dtype=torch.long)

    def to_numpy(self, y):
        return y.detach().float().cpu().numpy()

    def synchronize(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def gate_sequences(self, sequences: int) -> np.ndarray:
        """The sequences whose states the first call keeps: the first and the last, GATE_TOKENS in all."""
        n = max(1, min(sequences, GATE_TOKENS // self.spec.seq_len))
        first = (n + 1) // 2
        return np.unique(np.concatenate([np.arange(first), np.arange(sequences - (n - first), sequences)]))

    def run(self, ids):
        import torch

        with torch.inference_mode():
            return self._forward(ids)

    def _forward(self, ids):
        import torch.nn.functional as F

        t, s = self.t, self.spec
        B, S = ids.shape
        d, H, hn, eps = s.width, s.heads, s.head_dim, s.eps
        keep = None
        if self.record:
            self.record = False
            keep = self._keep_fn(ids)
        h = F.embedding(ids, t["embedding"]) + t["pos"][:S]
        h = F.layer_norm(h, (d,), *t["emb_norm"], eps)
        for i, lw in enumerate(t["layers"]):
            h_in = h
            a = F.layer_norm(h, (d,), *lw["norm1"], eps)
            qkv = F.linear(a, lw["qkv"], lw["qkv_bias"]).view(B, S, H, 3 * hn).transpose(1, 2)
            q, k, v = qkv.split(hn, dim=-1)
            ctx = F.scaled_dot_product_attention(q, k, v)
            h = h + F.linear(ctx.transpose(1, 2).reshape(B, S, d), lw["dense"], lw["dense_bias"])
            f = F.layer_norm(h, (d,), *lw["norm2"], eps).reshape(B * S, d)
            o = self.calls[i](f)
            if keep is not None:
                keep(i, h_in, f, o)
            h = h + o.view(B, S, -1)
        return F.layer_norm(h, (d,), *t["final_norm"], eps).reshape(B * S, d)

    def _keep_fn(self, ids):
        import torch

        B, S = ids.shape
        seqs = self.gate_sequences(B)
        index = torch.as_tensor(seqs, device=ids.device)
        self.states = {"sequences": seqs, "tokens": ids.index_select(0, index).cpu().numpy(), "h": [], "f": [], "o": []}

        def keep(i, h_in, f, o):
            for name, v in (("h", h_in), ("f", f.view(B, S, -1)), ("o", o.view(B, S, -1))):
                self.states[name].append(v.index_select(0, index).float().cpu().numpy().reshape(len(seqs) * S, -1))

        return keep


def build_encoder(case, weights: dict, build_one) -> EncoderKernel:
    """The encoder of ``case``: ``build_one(layer, weights)`` builds one feedforward kernel (the row's
    backend) per model layer, each on that layer's weights."""
    from fffbench.casedata import encoder_spec

    spec = encoder_spec(case)
    ffns = [build_one(case.layer, weights["ffn"][i]) for i in range(spec.layers)]
    return EncoderKernel(spec, weights, ffns, case.device, case.dtype, case.layer)


__all__ = ["GATE_TOKENS", "EncoderKernel", "build_encoder", "ffn_caller"]
