"""The correctness gate: every backend output is compared with the float64 reference before timing.

FFF routing is discontinuous: a logit within rounding distance of zero may legitimately send a
reduced-precision backend down the other branch, changing that row's output completely. So the
gate splits rows in two. A row is *decisive* when every logit on its reference path is further from
zero than eight standard deviations of the rounding noise the dtype can put into it; on those rows
the backend must match the reference within the dtype's tolerance, with no exception. The other
rows may take another path; the share of all rows that match is reported as the path agreement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: unit roundoff of the storage dtype (inputs and weights are rounded to it)
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
#: (global relative error, per-row error relative to the RMS row norm) allowed on decisive rows
TOLERANCE = {"float32": (1e-4, 1e-3), "bfloat16": (2e-2, 6e-2), "float16": (4e-3, 1.5e-2)}
_SIGMAS = 8.0
_ACC_ROUNDOFF = 2.0 ** -24  # backends accumulate in float32 at least


@dataclass(frozen=True)
class Reference:
    """The float64 output of a case and, for FFF, each row's smallest logit margin.

    ``margin`` is ``min |z| / noise`` over the visited nodes, with ``noise = sqrt(sum (x_i w_i)^2) + |b|``
    the scale of the random rounding error in ``z``; ``inf`` for FF layers, which do not route.
    """

    y: np.ndarray
    margin: np.ndarray
    width: int

    @classmethod
    def compute(cls, layer, weights, x) -> Reference:
        if layer.family == "ff":
            y = layer.reference(x, weights)
            return cls(y, np.full(y.shape[0], np.inf), layer.width)
        return cls.from_walk(layer, weights, *layer.walk(x, weights))

    @classmethod
    def from_walk(cls, layer, weights, nodes, logits, noise) -> Reference:
        """The reference of an FFF layer from its float64 walk (:meth:`fffbench.layers.FFF.walk`)."""
        return cls(layer.output_from_walk(nodes, logits, weights), walk_margin(logits, noise), layer.width)

    def decisive(self, dtype: str) -> np.ndarray:
        return self.margin > decisive_threshold(dtype, self.width)


def walk_margin(logits, noise) -> np.ndarray:
    """Each row's smallest ``|z| / noise`` over the visited nodes of every tree (inf where the noise is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(noise > 0, np.abs(logits) / noise, np.inf)
    return m.reshape(m.shape[0], -1).min(axis=1)


def decisive_threshold(dtype: str, width: int) -> float:
    """The margin above which a logit's sign cannot be flipped by ``dtype``'s rounding (eight sigmas)."""
    return _SIGMAS * (UNIT_ROUNDOFF[dtype] + _ACC_ROUNDOFF * math.sqrt(width))


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    rel_err: float          # ||y - ref|| / ||ref|| over decisive rows
    max_row_err: float      # worst decisive row: ||y_r - ref_r|| / RMS row norm of ref
    path_agreement: float   # share of all rows within the row tolerance (NaN for FF)
    decisive_frac: float    # share of rows the strict check covers
    reason: str = ""


def check_output(y, ref: Reference, dtype: str, family: str) -> CheckResult:
    """Compare a backend's output with the reference; ``reason`` says why a check failed."""
    nan = float("nan")
    y = np.asarray(y)
    if y.shape != ref.y.shape:
        return CheckResult(False, nan, nan, nan, nan, f"output shape {y.shape}, expected {ref.y.shape}")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).any(axis=1).sum())
        return CheckResult(False, nan, nan, nan, nan, f"{bad} rows hold NaN or Inf")
    tol, row_tol = TOLERANCE[dtype]
    diff = np.linalg.norm(y - ref.y, axis=1)
    norms = np.linalg.norm(ref.y, axis=1)
    rms = max(float(np.sqrt(np.mean(norms ** 2))), 1e-30)
    row_err = diff / rms
    dec = ref.decisive(dtype)
    n_dec = int(dec.sum())
    if n_dec:
        rel = float(np.linalg.norm(diff[dec]) / max(np.linalg.norm(norms[dec]), 1e-30))
        worst = float(row_err[dec].max())
    else:
        rel = worst = 0.0
    agree = float(np.mean(row_err <= row_tol)) if family == "fff" else nan
    frac = n_dec / len(dec) if len(dec) else 1.0
    if n_dec and worst > row_tol:
        bad = int((row_err[dec] > row_tol).sum())
        return CheckResult(False, rel, worst, agree, frac,
                           f"{bad} decisive rows off by up to {worst:.2e} (row tolerance {row_tol:.0e} for {dtype})")
    if rel > tol:
        return CheckResult(False, rel, worst, agree, frac, f"relative error {rel:.2e} above {tol:.0e} for {dtype}")
    return CheckResult(True, rel, worst, agree, frac)
