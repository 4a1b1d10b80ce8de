"""Summary statistics of timing samples.

Medians, not means, are the headline: timing noise is one-sided (interrupts, frequency dips only
ever add time). The interval of the median is distribution-free (binomial order statistics), so it
holds for the skewed, multi-modal samples real machines produce.
"""
from __future__ import annotations

import math

import numpy as np

#: a row is flagged noisy when its 95% interval of the median is wider than this share of the median
NOISE_THRESHOLD = 0.10


def median_ci(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic confidence interval of the median (normal approximation to the binomial)."""
    s = np.sort(np.asarray(samples, dtype=float))
    n = len(s)
    if n == 0:
        return math.nan, math.nan
    z = {0.90: 1.645, 0.95: 1.96, 0.99: 2.576}.get(confidence, 1.96)
    half = z * math.sqrt(n) / 2
    lo = max(math.floor(n / 2 - half), 0)
    hi = min(math.ceil(n / 2 + half), n - 1)
    return float(s[lo]), float(s[hi])


def summarize(samples) -> dict:
    """median, IQR, min, mean, std, n, the median's 95% interval and the noise flag."""
    s = np.asarray(samples, dtype=float)
    if s.size == 0:
        return {k: math.nan for k in ("median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s")} | {
            "n_samples": 0, "noisy": False}
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    lo, hi = median_ci(s)
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "min_s": float(s.min()), "mean_s": float(s.mean()),
            "std_s": float(s.std(ddof=1)) if s.size > 1 else 0.0, "ci_low_s": lo, "ci_high_s": hi,
            "n_samples": int(s.size), "noisy": bool((hi - lo) > NOISE_THRESHOLD * med)}


def ratio_ci(num, den, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians ``median(num) / median(den)`` with a percentile-bootstrap interval."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    r = np.random.default_rng(seed)
    ma = np.median(a[r.integers(0, a.size, (n_boot, a.size))], axis=1)
    mb = np.median(b[r.integers(0, b.size, (n_boot, b.size))], axis=1)
    alpha = (1 - confidence) / 2
    boots = ma / mb
    return float(np.median(a) / np.median(b)), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))
