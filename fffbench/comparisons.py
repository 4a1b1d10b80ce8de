"""The comparisons a suite declares (``comparisons:`` in its YAML) and the per-row times table:
what ``fffbench run`` prints at the end of a run, and the report's "suite comparisons" section.
"""
from __future__ import annotations

import math

import pandas as pd

from fffbench.runs import Runs, fastest, layer_label, prepare, warm
from fffbench.suite import BEST, Comparison
from fffbench.timing.stats import ratio_ci

#: the axes of the suite comparisons (kept for :func:`comparison_table`)
MATCH = ["device", "dtype", "batch", "width", "input", "seed", "threads"]


def times_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per stored row: layer, backend, status and the timing summary in milliseconds."""
    out = pd.DataFrame({
        "device": df["device"], "dtype": df["dtype"], "batch": df["batch"], "threads": df["threads"],
        "layer": [layer_label(r) for _, r in df.iterrows()], "backend": df["backend"], "level": df["level"],
        "status": df["status"], "median_ms": df["median_s"] * 1e3, "iqr_ms": df["iqr_s"] * 1e3,
        "n": df["n_samples"], "noisy": df["noisy"], "GB/s": df["gbps"], "GFLOP/s": df["gflops"],
        "rel_err": df["rel_err"], "path_agree": df["path_agreement"], "reason": df["reason"].fillna(""),
    })
    return out.reset_index(drop=True)


def suite_comparisons(text: str) -> list[Comparison]:
    """The ``comparisons`` of a stored suite.yaml, read without re-validating its backends (a stored
    run may name backends this installation lacks)."""
    import yaml

    out = []
    for c in (yaml.safe_load(text) or {}).get("comparisons") or []:
        p = c.get("paper") or {}
        out.append(Comparison(str(c["label"]), c["numerator"], c["denominator"], c.get("hidden"), c.get("device"),
                              p.get("value"), str(p.get("source", "")), bool(p.get("secondary", False))))
    return out


def _pick(rows: pd.DataFrame, backend: str):
    """The row of ``backend`` among ``rows``, or the fastest correct one for 'best-ff'/'best-fff'."""
    if backend in BEST:
        return fastest(rows, BEST[backend])[0]
    sel = rows[rows["backend"] == backend]
    return sel.iloc[0] if len(sel) else None


def comparison_table(df: pd.DataFrame, comparisons: list[Comparison], samples: dict | None = None) -> pd.DataFrame:
    """Every comparison the suite declares, on every matching (device, dtype, batch, ...) group."""
    rows = []
    if samples is None and "samples" in df:
        samples = dict(zip(df["row_id"], df["samples"]))
    samples = samples or {}
    runs = Runs(prepare(df), {})
    for key, grp in warm(runs.df).groupby(MATCH + ["run"], dropna=False):
        key = dict(zip(MATCH + ["run"], key))  # one regime: CPU wall clock, GPU warm L2 and eager launches
        ff_rows, fff_rows = grp[grp["family"] == "ff"], grp[grp["family"] == "fff"]
        for comp in comparisons:
            if comp.device and comp.device != key["device"]:
                continue
            for h in [comp.hidden] if comp.hidden else sorted(ff_rows["hidden"].dropna().unique()):
                for (depth, trees), fffl in fff_rows.groupby(["depth", "trees"]):
                    num, den = _pick(ff_rows[ff_rows["hidden"] == h], comp.numerator), _pick(fffl, comp.denominator)
                    rows.append(_compare(comp, key, h, depth, trees, num, den, samples))
    return pd.DataFrame(rows)


def _compare(comp, key, hidden, depth, trees, num, den, samples) -> dict:
    out = key | {"label": comp.label, "ff_hidden": int(hidden), "fff": f"{int(trees)}x{int(depth)}",
                 "numerator": comp.numerator, "denominator": comp.denominator,
                 "ff_backend": None if num is None else num["backend"],
                 "fff_backend": None if den is None else den["backend"],
                 "ff_ms": math.nan, "fff_ms": math.nan, "speedup": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                 "neuron_limit": hidden / ((depth + 1) * trees), "paper": comp.paper_value,
                 "paper_source": comp.paper_source, "paper_secondary": comp.paper_secondary, "note": ""}
    missing = [(n, r) for n, r in ((comp.numerator, num), (comp.denominator, den)) if r is None or r["status"] != "ok"]
    if missing:
        out["note"] = "; ".join(f"{n}: {'no correct row' if r is None else r['status']}" for n, r in missing)
        return out
    out["ff_ms"], out["fff_ms"] = num["median_s"] * 1e3, den["median_s"] * 1e3
    a, b = samples.get(num["row_id"]), samples.get(den["row_id"])
    if a and b:
        out["speedup"], out["ci_low"], out["ci_high"] = ratio_ci(a, b)
    else:
        out["speedup"] = num["median_s"] / den["median_s"]
    return out
