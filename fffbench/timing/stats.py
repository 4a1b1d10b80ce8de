"""Summary statistics of timing samples, within and between worker processes.

Within a process, medians, not means: timing noise is one-sided (interrupts and frequency dips
only ever add time), and the interval of a median is distribution-free (binomial order
statistics). Between processes the unit of replication is the process: each contributes the
median of its own samples, and the row's value is the median of those medians. A median, not a
mean, because what disturbs a process on a shared machine is a minority of processes moved far
(a co-tenant's burst that the load probe did not see): on the AMD VM four of twenty processes of
one headline run read 151-176x against 129-143x for the rest, which moved the geometric mean to
139.5x and left the median at 135.9x, beside 132.9x and 135.7x for the next two runs.

The interval a row or a ratio carries is a *re-run interval*: the range in which the estimate of
a second run of as many processes lands 95% of the time, which is the promise a user checks by
running the suite again. Two runs' estimates differ by the error of both, so the half-width on the
log scale is ``t(n-1) * s * sqrt(pi/2) * sqrt(1/n + 1/n)``, where ``s`` is the standard deviation
of the per-process values and ``pi/2`` the variance of a median relative to a mean (normal values,
many of them; fewer make it smaller, 1.35 at three, so the interval errs wide there). That is
sqrt(2) wider than a confidence interval of this run's median (kept beside it as ``mean_ci``). It
is honest at small counts (with three processes t is 4.3, not 1.96) and grows with the spread
between processes, which is where most of the run-to-run variance of a timing lives. The spread is
the plain standard deviation, not a robust one: a few disturbed processes widen the interval
(the run says it was disturbed) while the median keeps the estimate where the quiet processes put
it. With a single process (and in runs stored before worker processes), the within-process
order-statistic interval is used.

Ratios of two rows measured in the same processes are *paired*: each round of a process times
both rows back to back, so a round gives one ratio; a process's ratio is the median of its
rounds', the ratio is the median over processes, and its interval is the same re-run interval over
processes (over rounds for one process).
"""
from __future__ import annotations

import math

import numpy as np

#: how much wider a re-run interval is than a confidence interval of one run's mean, on the log
#: scale: two runs of as many processes differ by the error of both, sqrt(1/n + 1/n) = sqrt(2/n)
RERUN_WIDENING = math.sqrt(2.0)
#: the variance of the median of many normal values over that of their mean
MEDIAN_VARIANCE = math.pi / 2
#: a row is flagged noisy when its 95% interval is wider than this share of its median
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


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def median_interval(values, confidence: float = 0.95, rerun: bool = True) -> tuple[float, float, float]:
    """(median, low, high) of ``values`` on the log scale: with ``rerun`` the interval in which a
    second sample of as many values puts its median (see the module docstring), otherwise the
    confidence interval of this sample's median. Two values have a mean for their median, and
    the interval of a mean."""
    v = np.log(np.asarray([x for x in values if x > 0 and math.isfinite(x)], dtype=float))
    if v.size == 0:
        return math.nan, math.nan, math.nan
    m = float(np.median(v))
    if v.size == 1:
        return math.exp(m), math.nan, math.nan
    scale = (RERUN_WIDENING if rerun else 1.0) * math.sqrt((MEDIAN_VARIANCE if v.size > 2 else 1.0) / v.size)
    half = t_quantile(0.5 + confidence / 2, v.size - 1) * float(v.std(ddof=1)) * scale
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def as_rerun(value: float, low: float, high: float) -> tuple[float, float]:
    """A confidence interval of a mean of several processes (what runs stored before re-run
    intervals carry: the t interval of the mean of the log process values) turned into the re-run
    interval of that mean: the same t and spread, sqrt(2) wider on the log scale."""
    if not (value > 0 and low > 0 and high > 0):
        return low, high
    k = RERUN_WIDENING
    return value * (low / value) ** k, value * (high / value) ** k


def _empty() -> dict:
    return dict.fromkeys(("median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s", "between_cv"), math.nan) | {"n_samples": 0, "n_processes": 0, "noisy": False}


def summarize(samples, processes=None) -> dict:
    """median, IQR, min, mean, std, n, the 95% interval, the noise flag, and across processes their
    count and spread (``between_cv``: the standard deviation of the log process medians).

    ``samples`` is one list of seconds, or with ``processes`` omitted a list of per-process lists.
    """
    groups = [list(g) for g in samples] if processes is None and samples and isinstance(samples[0], (list, tuple)) \
        else [list(samples)]
    groups = [g for g in groups if g]
    if not groups:
        return _empty()
    pooled = np.asarray([x for g in groups for x in g], dtype=float)
    q1, q3 = np.percentile(pooled, [25, 75])
    out = {"iqr_s": float(q3 - q1), "min_s": float(pooled.min()), "mean_s": float(pooled.mean()),
           "std_s": float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0, "n_samples": int(pooled.size),
           "n_processes": len(groups)}
    if len(groups) == 1:
        med = float(np.median(pooled))
        lo, hi = median_ci(pooled)
        out |= {"median_s": med, "ci_low_s": lo, "ci_high_s": hi, "between_cv": math.nan, "interval": "within-process"}
    else:
        medians = [float(np.median(g)) for g in groups]
        med, lo, hi = median_interval(medians)
        out |= {"median_s": med, "ci_low_s": lo, "ci_high_s": hi, "interval": "rerun",
                "between_cv": float(np.std(np.log(medians), ddof=1))}
    out["noisy"] = bool(math.isfinite(out["ci_high_s"]) and (out["ci_high_s"] - out["ci_low_s"]) >
                        NOISE_THRESHOLD * out["median_s"])
    return out


def round_medians(samples, rounds) -> dict[int, float]:
    """Median of each round's samples (``rounds[i]`` is the round of ``samples[i]``)."""
    by: dict[int, list[float]] = {}
    for s, r in zip(samples, rounds):
        by.setdefault(int(r), []).append(s)
    return {r: float(np.median(v)) for r, v in by.items()}


def paired_ratio(num: dict, den: dict, confidence: float = 0.95) -> dict:
    """The ratio ``num / den`` of two rows timed in the same rounds of the same processes.

    ``num`` and ``den`` map a process id to ``(samples, rounds)``. Per process, the ratio of each
    round's medians, then the median over its rounds; the estimate is the median over processes
    with the re-run interval of :func:`median_interval` (over rounds when there is one process). Returns the ratio, its
    interval, the pairs and processes it used, and each process's ratio.
    """
    per_process, all_pairs = {}, []
    for p in sorted(set(num) & set(den), key=str):
        a, b = round_medians(*num[p]), round_medians(*den[p])
        pairs = [a[r] / b[r] for r in sorted(set(a) & set(b)) if b[r] > 0]
        if pairs:
            per_process[p] = float(np.median(pairs))
            all_pairs.append(pairs)
    n_pairs = sum(len(p) for p in all_pairs)
    if not per_process:
        return {"ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "mean_ci": [math.nan, math.nan],
                "interval": None, "n_pairs": 0, "n_processes": 0,
                "per_process": {}}
    several = len(per_process) > 1
    values = list(per_process.values()) if several else all_pairs[0]
    r, lo, hi = median_interval(values, confidence, rerun=several)
    _, mlo, mhi = median_interval(values, confidence, rerun=False)
    return {"ratio": r, "ci_low": lo, "ci_high": hi, "mean_ci": [mlo, mhi], "n_pairs": n_pairs,
            "n_processes": len(per_process), "interval": "rerun" if several else "within-process",
            "per_process": per_process}


def ratio_ci(num, den, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians ``median(num) / median(den)`` of two independently timed sample sets, with a
    percentile-bootstrap interval: the estimate for rows that were not paired (runs stored before
    worker processes, or rows of different groups)."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    r = np.random.default_rng(seed)
    ma = np.median(a[r.integers(0, a.size, (n_boot, a.size))], axis=1)
    mb = np.median(b[r.integers(0, b.size, (n_boot, b.size))], axis=1)
    alpha = (1 - confidence) / 2
    boots = ma / mb
    return float(np.median(a) / np.median(b)), float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def log_ratio_test(base, other) -> dict:
    """Welch's t on the logarithms of two independent sets of timings (samples, or per-process
    medians): the ratio of their geometric means, its standard error on the log scale and the
    degrees of freedom. Unlike a rank test it has power at three values a side (a rank test's
    smallest one-sided p with 3 and 3 values is 0.05), and timings are close to log-normal."""
    a = np.log(np.asarray([x for x in base if x > 0], dtype=float))
    b = np.log(np.asarray([x for x in other if x > 0], dtype=float))
    if a.size < 2 or b.size < 2:
        return {"log_ratio": float(b.mean() - a.mean()) if a.size and b.size else math.nan, "se": math.nan,
                "df": math.nan}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (a.size - 1) if a.size > 1 else 0) + (vb ** 2 / (b.size - 1))) if se > 0 \
        else float(a.size + b.size - 2)
    return {"log_ratio": float(b.mean() - a.mean()), "se": se, "df": df}


def p_greater(test: dict, factor: float) -> float:
    """One-sided p of ``other > factor x base`` from :func:`log_ratio_test` (NaN when it cannot tell)."""
    from scipy.stats import t

    if not math.isfinite(test["se"]):
        return math.nan
    if test["se"] == 0:
        return 0.0 if test["log_ratio"] > math.log(factor) else 1.0
    return float(t.sf((test["log_ratio"] - math.log(factor)) / test["se"], test["df"]))
