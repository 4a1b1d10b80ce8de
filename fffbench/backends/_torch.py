"""Shared plumbing for PyTorch backends: dtype mapping, device checks, the kernel wrapper."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fffbench.registry import Kernel

TORCH_DTYPES = ("float32", "bfloat16", "float16")


def torch_available(device: str) -> str | None:
    """Reason torch cannot run on ``device``, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


def tdtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def weights_to(weights: dict, device: str, dtype: str) -> dict:
    """Weights as torch tensors on ``device`` in ``dtype`` (biases too: the gate's tolerance covers it)."""
    import torch

    return {k: torch.as_tensor(np.ascontiguousarray(v)).to(device=device, dtype=tdtype(dtype)) for k, v in weights.items()}


class TorchKernel(Kernel):
    """Wraps ``fn(x: Tensor) -> Tensor``. float32 matmuls on CUDA run in true fp32: torch's default
    (``allow_tf32`` False) is kept, since TF32 would be a different dtype from the paper's."""

    def __init__(self, fn: Callable, device: str, dtype: str):
        self.fn, self.device, self.dtype = fn, device, dtype

    def prepare(self, x):
        import torch

        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
        return t.to(device=self.device, dtype=tdtype(self.dtype))

    def run(self, x):
        import torch

        with torch.inference_mode():
            return self.fn(x)

    def to_numpy(self, y):
        return y.detach().float().cpu().numpy()

    def synchronize(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
