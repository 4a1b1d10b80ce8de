"""The FFF as UltraFastBERT's training code computes it, and so as the released model runs it: every
logit (``linear_in`` over all nodes), GELU, a decision map built level by level, the activations
masked to the path, ``linear_out``. The same function as every FFF backend, at the cost of a dense
layer of ``trees x nodes`` neurons (a Level-3 FFF: two GEMMs), which is why the published model is
no faster than BERT (UltraFastBERT issue #1)."""
from __future__ import annotations

from fffbench.backends._torch import TORCH_DTYPES, TorchKernel, torch_available, weights_to
from fffbench.registry import register_backend


@register_backend("fff-masked", family="fff", level={"cpu": "cpu-l3", "cuda": "gpu-native"}, devices=("cpu", "cuda"),
                  dtypes=TORCH_DTYPES, available=torch_available)
def build_masked(layer, weights, *, device, dtype):
    """The training code's FFF: all logits by GEMM, decisions logit > 0, activations masked to the path, GEMM."""
    import torch
    import torch.nn.functional as F

    w = weights_to(weights, device, dtype)
    K, N, D = layer.trees, layer.nodes, layer.depth
    w1, b1 = w["w1"].reshape(K * N, -1), w["b1"].reshape(K * N)
    w2 = w["w2"].reshape(K * N, -1)

    def fn(x):
        B = x.shape[0]
        logits = F.linear(x, w1, b1)
        decisions = (logits > 0).view(B, K, N)
        current = torch.zeros(B, K, 1, dtype=torch.long, device=x.device)
        mask = torch.zeros(B, K, N, dtype=x.dtype, device=x.device)
        mask.scatter_(2, current, 1.0)
        for _ in range(D):
            current = 2 * current + 1 + decisions.gather(2, current).long()
            mask.scatter_(2, current, 1.0)
        return torch.matmul((F.gelu(logits).view(B, K, N) * mask).view(B, K * N), w2)

    return TorchKernel(fn, device, dtype)
