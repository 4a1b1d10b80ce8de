"""An independent small UltraFastBERT in plain torch, written from the training code (UltraFastBERT's
``training/cramming/architectures/fff.py`` and ``crammed_bert.py``, cramming's attention and
embedding), and a writer of its checkpoints in the published format.

Nothing here uses fffbench: the FFF computes every logit with ``linear_in``, decides ``logit > 0``,
applies GELU, builds the decision map level by level with ``next = (cur - platform) * 2 + move +
next_platform`` and masks the activations with it before ``linear_out`` (no bias); attention is the
sequence-first fused-QKV self-attention (per head ``[q | k | v]``, ``baddbmm`` scores, softmax);
layers are pre-LN. ``save`` writes ``model.safetensors`` (through the safetensors package, from the
module's own state dict, so the key names are the module tree's) and the nested ``config.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn


class TrainingFFF(nn.Module):
    def __init__(self, width, depth, trees):
        super().__init__()
        self.width, self.depth, self.trees = width, depth, trees
        self.n_nodes = 2 ** (depth + 1) - 1
        self.linear_in = nn.Linear(width, trees * self.n_nodes, bias=True)
        self.linear_out = nn.Linear(trees * self.n_nodes, width, bias=False)
        self.activation = nn.GELU()

    def forward(self, oldx):
        x = oldx.reshape(-1, self.width)
        b = x.shape[0]
        logits = self.linear_in(x)
        decisions = (logits > 0).long().view(b, self.trees, self.n_nodes)
        activations = self.activation(logits).view(b, self.trees, self.n_nodes)
        with torch.no_grad():
            current = torch.zeros((b, self.trees), dtype=torch.long, device=x.device)
            decision_map = torch.zeros_like(decisions, dtype=x.dtype)
            decision_map.scatter_(dim=2, index=current.unsqueeze(-1), value=1.0)
            for d in range(self.depth):
                platform, next_platform = 2 ** d - 1, 2 ** (d + 1) - 1
                moves = torch.gather(decisions, 2, current.unsqueeze(2)).squeeze(2)
                nxt = (current - platform) * 2 + moves + next_platform
                decision_map.scatter_(2, nxt.unsqueeze(-1), 1.0)
                current = nxt
        return self.linear_out((activations * decision_map).flatten(1, 2)).reshape_as(oldx)


class SelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.hn = heads, width // heads
        self.query_key_value = nn.Linear(width, 3 * width, bias=False)

    def forward(self, h):  # h: [S, B, H]
        S, B, _ = h.shape
        mixed = self.query_key_value(h).view(S, B, self.heads, 3 * self.hn)
        q, k, v = torch.split(mixed, [self.hn] * 3, dim=3)
        q = q.reshape(S, B * self.heads, self.hn).transpose(0, 1)
        k = k.reshape(S, B * self.heads, self.hn).transpose(0, 1)
        v = v.reshape(S, B * self.heads, self.hn).transpose(0, 1)
        scores = torch.baddbmm(torch.empty(B * self.heads, S, S, dtype=h.dtype), q, k.transpose(1, 2), beta=0.0,
                               alpha=1.0 / math.sqrt(self.hn))
        ctx = torch.bmm(torch.softmax(scores, dim=-1), v)              # [B*heads, S, hn]
        return ctx.view(B, self.heads, S, self.hn).permute(2, 0, 1, 3).reshape(S, B, self.heads * self.hn)


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.self_attention = SelfAttention(width, heads)
        self.dense = nn.Linear(width, width, bias=False)

    def forward(self, h):
        return self.dense(self.self_attention(h))


class Layer(nn.Module):
    def __init__(self, width, heads, depth, trees, eps):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ffn = TrainingFFF(width, depth, trees)

    def forward(self, h):
        h = h + self.attn(self.norm1(h))
        return h + self.ffn(self.norm2(h))


class PosEmbedding(nn.Module):
    def __init__(self, width, max_len=512):
        super().__init__()
        pe = torch.zeros(max_len, width)
        pos = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)
        self.scale_factor = nn.Parameter(torch.tensor([1.0 / width ** 0.5]))

    def forward(self, ids):
        return self.scale_factor * self.pe[:, :ids.shape[1], :]


class Embedding(nn.Module):
    def __init__(self, vocab, width, eps):
        super().__init__()
        self.word_embedding = nn.Embedding(vocab, width, padding_idx=0)
        self.pos_embedding = PosEmbedding(width)
        self.norm = nn.LayerNorm(width, eps=eps)

    def forward(self, ids):
        return self.norm(self.word_embedding(ids) + self.pos_embedding(ids))


class Encoder(nn.Module):
    def __init__(self, vocab, width, heads, layers, depth, trees, eps):
        super().__init__()
        self.embedding = Embedding(vocab, width, eps)
        self.layers = nn.ModuleList([Layer(width, heads, depth, trees, eps) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, ids):  # ids [B, S] -> [B * S, H], as fffbench's encoder orders tokens
        h = self.embedding(ids).transpose(0, 1).contiguous()
        for layer in self.layers:
            h = layer(h)
        return self.final_norm(h.transpose(0, 1).contiguous()).reshape(-1, h.shape[-1])


class UltraFastBERT(nn.Module):
    """``ScriptableLMForPreTraining`` without its MLM head: state dict keys ``encoder.…`` as published."""

    def __init__(self, vocab=50, width=16, heads=2, layers=3, depth=2, trees=3, eps=1e-12, seed=0, spread=0.3):
        super().__init__()
        torch.manual_seed(seed)
        self.cfg = dict(vocab=vocab, width=width, heads=heads, layers=layers, depth=depth, trees=trees, eps=eps)
        self.encoder = Encoder(vocab, width, heads, layers, depth, trees, eps)
        with torch.no_grad():  # trained-looking weights: biases and norms away from their initial values
            for name, p in self.named_parameters():
                if "scale_factor" in name:
                    continue
                p.add_(torch.randn_like(p) * (spread if p.dim() == 1 else 0.05))

    def forward(self, ids):
        return self.encoder(ids)

    def save(self, folder, prefix: str = "", config: str = "nested", dtype=None) -> Path:
        """Write ``folder/model.safetensors`` and ``config.json`` (``nested``: an ``arch`` dict, as
        published), ``model_config.json`` (``flat``) or both; keys prefixed with ``prefix``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {prefix + k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        c = self.cfg
        arch = {"architectures": ["ScriptableCrammedBERT"], "num_transformer_layers": c["layers"],
                "hidden_size": c["width"], "intermed_size": c["trees"], "intermed_depth": c["depth"],
                "intermed_type": "fff", "norm": "LayerNorm", "norm_eps": c["eps"], "norm_scheme": "pre",
                "nonlin": "GELU", "attention": {"type": "self-attention", "num_attention_heads": c["heads"],
                                                "qkv_bias": False},
                "embedding": {"vocab_size": c["vocab"], "pos_embedding": "scaled-sinusoidal",
                              "max_seq_length": 128, "embedding_dim": c["width"], "normalization": True},
                "use_bias": False, "final_norm": True}
        if config in ("nested", "both"):
            (folder / "config.json").write_text(json.dumps({"architectures": ["ScriptableLMForPreTraining"],
                                                            "model_type": "crammedBERT", "arch": arch}))
        if config in ("flat", "both"):
            (folder / "model_config.json").write_text(json.dumps(arch))
        return folder
