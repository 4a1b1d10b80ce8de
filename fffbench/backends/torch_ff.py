"""Dense FF baselines in PyTorch: the native layer (GEMM) and the paper's per-row BMM."""
from __future__ import annotations

from fffbench.backends._torch import TORCH_DTYPES, TorchKernel, torch_available, weights_to
from fffbench.registry import register_backend


@register_backend("ff-dense", family="ff", level={"cpu": "cpu-l3", "cuda": "gpu-native"},
                  devices=("cpu", "cuda"), dtypes=TORCH_DTYPES, available=torch_available)
def build_dense(layer, weights, *, device, dtype):
    """Linear -> GELU -> Linear: two GEMMs (MKL/oneDNN on CPU, cuBLAS on GPU)."""
    import torch
    import torch.nn.functional as F

    w = weights_to(weights, device, dtype)
    w1, b1, w2 = w["w1"], w["b1"], w["w2"]

    def fn(x):
        return torch.matmul(F.gelu(F.linear(x, w1, b1)), w2)

    return TorchKernel(fn, device, dtype)


@register_backend("ff-bmm", family="ff", level="pytorch-bmm", devices=("cpu", "cuda"),
                  dtypes=TORCH_DTYPES, available=torch_available)
def build_bmm(layer, weights, *, device, dtype):
    """The paper's FF BMM: each row multiplies the weight matrix expanded per row (B GEMVs).

    The expansion is a stride-0 view, so no copy of the weights is made per row.
    """
    import torch
    import torch.nn.functional as F

    w = weights_to(weights, device, dtype)
    w1t, b1, w2 = w["w1"].t(), w["b1"], w["w2"]

    def fn(x):
        B = x.shape[0]
        h = torch.bmm(x.unsqueeze(1), w1t.unsqueeze(0).expand(B, *w1t.shape)).squeeze(1) + b1
        return torch.bmm(F.gelu(h).unsqueeze(1), w2.unsqueeze(0).expand(B, *w2.shape)).squeeze(1)

    return TorchKernel(fn, device, dtype)
