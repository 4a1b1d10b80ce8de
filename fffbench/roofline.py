"""The roofline arithmetic: the limits that measured ceilings (:mod:`fffbench.ceilings`) imply.

FFF is memory-bound (about 5 FLOP per compulsory byte in fp32) and the dense layer compute-bound,
so the honest limit of a speedup is the *roofline ratio*: dense FLOPs at the measured GEMM rate
over FFF compulsory bytes at the measured copy bandwidth.
"""
from __future__ import annotations


def roofline_limit(ff_flops: float, fff_bytes: float, gemm_flops_per_s: float, copy_bytes_per_s: float) -> float:
    """Largest speedup physics allows: dense at its ceiling over FFF at the memory floor."""
    if not (gemm_flops_per_s and copy_bytes_per_s):
        return float("nan")
    return (ff_flops / gemm_flops_per_s) / (fff_bytes / copy_bytes_per_s)


def floor_seconds(flops: float, nbytes: float, gemm_flops_per_s: float, copy_bytes_per_s: float) -> float:
    """The roofline time of one call: the larger of compute time and memory time."""
    return max(flops / gemm_flops_per_s if gemm_flops_per_s else 0.0, nbytes / copy_bytes_per_s)
