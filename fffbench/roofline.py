"""The roofline arithmetic: the limits that measured ceilings (:mod:`fffbench.ceilings`) imply.

FFF is memory-bound (about 5 FLOP per compulsory byte in fp32) and the dense layer compute-bound,
so the honest limit of a speedup is the *roofline ratio*: dense FLOPs at the measured GEMM rate
(or, where the dense layer is memory-bound, its compulsory bytes at the copy bandwidth) over FFF
compulsory bytes at the measured copy bandwidth.
"""
from __future__ import annotations


def roofline_limit(ff_flops: float, fff_bytes: float, gemm_flops_per_s: float, copy_bytes_per_s: float,
                   ff_bytes: float = 0.0, fff_seconds: float = float("nan")) -> float:
    """Largest speedup physics allows: dense at its floor over FFF at the memory floor. The dense
    floor is the larger of its FLOPs at the GEMM ceiling and its compulsory bytes (``ff_bytes``) at
    the copy ceiling: at a large batch the dense layer is compute-bound, but at a small one (B = 1
    reads 25 MB of weights for 9.4 MFLOP) it is memory-bound too, and a limit from FLOPs alone
    would sit far below what is measured. Where the measured FFF (``fff_seconds``, its fastest
    correct row) beats its own memory floor, its data sat in cache (a small batch, warm): the copy
    bandwidth bounds nothing there, and no limit is claimed (NaN)."""
    if not (gemm_flops_per_s and copy_bytes_per_s):
        return float("nan")
    if fff_seconds == fff_seconds and fff_seconds < fff_bytes / copy_bytes_per_s:
        return float("nan")
    ff_bytes = ff_bytes if ff_bytes == ff_bytes else 0.0  # not recorded: the FLOP floor alone
    return floor_seconds(ff_flops, ff_bytes, gemm_flops_per_s, copy_bytes_per_s) / (fff_bytes / copy_bytes_per_s)


def floor_seconds(flops: float, nbytes: float, gemm_flops_per_s: float, copy_bytes_per_s: float) -> float:
    """The roofline time of one call: the larger of compute time and memory time."""
    return max(flops / gemm_flops_per_s if gemm_flops_per_s else 0.0, nbytes / copy_bytes_per_s)
