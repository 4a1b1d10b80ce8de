"""FFF in PyTorch: the paper's BMM implementation (done correctly) and a vectorised gather version."""
from __future__ import annotations

from fffbench.backends._torch import TORCH_DTYPES, TorchKernel, torch_available, weights_to
from fffbench.registry import register_backend


@register_backend("fff-bmm", family="fff", level="pytorch-bmm", devices=("cpu", "cuda"),
                  dtypes=TORCH_DTYPES, available=torch_available)
def build_bmm(layer, weights, *, device, dtype):
    """The paper's FFF BMM: per level index_select + bmm, then one gather of W2 rows + bmm.

    Unlike the reference script, the activations are kept and every tree is summed.
    """
    import torch
    import torch.nn.functional as F

    w = weights_to(weights, device, dtype)
    K, L = layer.trees, layer.levels

    def fn(x):
        B = x.shape[0]
        y = None
        xr = x.unsqueeze(1)
        for k in range(K):
            w1, b1, w2 = w["w1"][k], w["b1"][k], w["w2"][k]
            n = torch.zeros(B, dtype=torch.long, device=x.device)
            nodes, acts = [], []
            for _ in range(L):
                z = torch.bmm(xr, w1.index_select(0, n).unsqueeze(2)).view(B) + b1.index_select(0, n)
                nodes.append(n)
                acts.append(F.gelu(z))
                n = 2 * n + 1 + (z > 0).long()
            idx = torch.stack(nodes, 1)
            part = torch.bmm(torch.stack(acts, 1).unsqueeze(1), w2.index_select(0, idx.view(-1)).view(B, L, -1))
            y = part.squeeze(1) if y is None else y + part.squeeze(1)
        return y

    return TorchKernel(fn, device, dtype)


@register_backend("fff-gather", family="fff", level="optimized", devices=("cpu", "cuda"),
                  dtypes=TORCH_DTYPES, available=torch_available)
def build_gather(layer, weights, *, device, dtype):
    """Vectorised FFF: all trees at once, per level a row gather and a row-wise dot; the output
    half is an embedding bag (``y = sum_i a_i W2[n_i]``) over the visited nodes."""
    import torch
    import torch.nn.functional as F

    w = weights_to(weights, device, dtype)
    K, N, L = layer.trees, layer.nodes, layer.levels
    w1 = w["w1"].reshape(K * N, -1)
    b1 = w["b1"].reshape(K * N)
    w2 = w["w2"].reshape(K * N, -1)
    offsets = torch.arange(K, device=device) * N

    def fn(x):
        B = x.shape[0]
        n = torch.zeros(B, K, dtype=torch.long, device=x.device)
        nodes, acts = [], []
        for _ in range(L):
            g = n + offsets
            z = torch.einsum("bd,bkd->bk", x, w1[g]) + b1[g]
            nodes.append(g)
            acts.append(F.gelu(z))
            n = 2 * n + 1 + (z > 0).long()
        idx = torch.stack(nodes, 2).reshape(B, K * L)
        a = torch.stack(acts, 2).reshape(B, K * L)
        return F.embedding_bag(idx, w2, per_sample_weights=a, mode="sum")

    return TorchKernel(fn, device, dtype)
