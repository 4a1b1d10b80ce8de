"""Comparing runs: two machines, or one machine before and after a change (numbers only; the
Markdown is :func:`fffbench.render.compare_markdown`, the figure :func:`fffbench.plots.plot_compare`).

Cases are matched across runs on everything that defines the work (:data:`fffbench.runs.CASE`:
layer, batch, dtype, device, input, seed, backend, regime; threads too when both runs used the
same thread counts). Per matched case: both medians, the ratio ``other / base`` (> 1: slower in
``other``) with a 95% interval, and Welch's t test on the logarithms of the timings. The unit of
replication is the worker process (each contributes its median) where both rows were measured in
at least three processes, else the samples. Unlike a rank test, which with three samples a side cannot
reach p < 0.05, this has power at a handful of values, so a baseline that doubled is caught.

Verdicts: *slower* (or *faster*) when the one-sided test of ``other > threshold x base`` (or
``other < base / threshold``) is significant at ``alpha``; *same* only when the equivalence test
(both one-sided tests against the threshold) says the change is within it; otherwise *too few
samples to tell*, never *same*. Summaries are geometric means of the ratios. What differs between
the environments that moves timings (threads, dtypes, versions, BLAS, clocks, ceilings) is warned.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fffbench.runs import CASE, Runs, geomean, layer_label
from fffbench.timing.regime import Regime
from fffbench.timing.stats import log_ratio_test, p_greater, t_quantile

ALPHA, THRESHOLD = 0.05, 1.10
UNSURE = "too few samples to tell"


def _keyed(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.assign(**{k: df[k].astype(float).fillna(-1) for k in ("hidden", "depth", "trees", "model_layers", "seq_len",
                                                                    "heads", "layer_index")},
                   **{k: df[k].astype(object).where(df[k].notna(), "") for k in ("model", "checkpoint_sha256")})
    return df.drop_duplicates(keys, keep="last").set_index(keys, drop=False)


def match_keys(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The matching axes: threads only when both runs used the same set of thread counts."""
    keys = [k for k in CASE if k != "threads"]
    return keys + (["threads"] if set(a["threads"]) == set(b["threads"]) else [])


#: processes a row needs for its test to use their medians (fewer say too little about the spread
#: between processes to test on: then the samples are the unit, as for a single process)
MIN_PROCESSES_FOR_TEST = 3


def _values(row) -> list[float]:
    """What a row contributes to the test: its processes' medians (three processes or more), else
    its samples."""
    procs = [p for p in (row.get("processes") or []) if p["samples"]] if isinstance(row.get("processes"), list) else []
    if len(procs) >= MIN_PROCESSES_FOR_TEST:
        return [float(np.median(p["samples"])) for p in procs]
    s = row.get("samples")
    return list(s) if isinstance(s, list) else []


def _p_less(test: dict, factor: float) -> float:
    """One-sided p of ``other < factor x base``."""
    flipped = {"log_ratio": -test["log_ratio"], "se": test["se"], "df": test["df"]}
    return p_greater(flipped, 1.0 / factor)


def compare_runs(runs: Runs, base: str | None = None, others=None, threshold: float = THRESHOLD,
                 alpha: float = ALPHA) -> pd.DataFrame:
    """One line per case matched between ``base`` (default: the first run) and each other run."""
    base = base or runs.labels[0]
    others = [o for o in (others or runs.labels) if o != base]
    a_all = runs.df[runs.df["run"] == base]
    out = []
    for other in others:
        b_all = runs.df[runs.df["run"] == other]
        keys = match_keys(a_all, b_all)
        a, b = _keyed(a_all, keys), _keyed(b_all, keys)
        for key in a.index.intersection(b.index):
            out.append(_line(dict(zip(keys, key)), base, other, a.loc[key], b.loc[key], threshold, alpha))
    cols = ["base", "other", "case", "device", "dtype", "batch", "backend", "base_status", "other_status", "base_ms",
            "other_ms", "ratio", "ci_low", "ci_high", "p_slower", "p_faster", "p_same", "verdict"]
    return pd.DataFrame(out, columns=cols + (sorted(out[0].keys() - set(cols)) if out else []))


def _line(key, base, other, ra, rb, threshold, alpha) -> dict:
    layer = layer_label({"family": key["family"], "hidden": key["hidden"], "depth": key["depth"],
                         "trees": key["trees"], "model": key.get("model") or None,
                         "layer_index": None if key.get("layer_index", -1) == -1 else key["layer_index"]})
    regime = Regime.parse(ra["regime"]).label
    line = {"base": base, "other": other, "case": f"{layer} B={key['batch']} d={key['width']}"
            + (f" ({regime})" if regime else ""),
            "device": key["device"], "dtype": key["dtype"], "batch": key["batch"], "backend": key["backend"],
            "base_status": ra["status"], "other_status": rb["status"], "base_ms": ra["median_s"] * 1e3,
            "other_ms": rb["median_s"] * 1e3, "ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "p_slower": math.nan, "p_faster": math.nan, "p_same": math.nan, "log_ratio": math.nan, "se": math.nan,
            "df": math.nan, "base_row": ra["row_id"], "other_row": rb["row_id"],
            "threads": f"{ra['threads']} / {rb['threads']}", "base_impl": ra.get("impl"), "other_impl": rb.get("impl")}
    if ra["status"] != "ok" or rb["status"] != "ok":
        line["verdict"] = "not timed" if ra["status"] == rb["status"] else f"{ra['status']} -> {rb['status']}"
        return line
    va, vb = _values(ra), _values(rb)
    if (len(va) > 2) != (len(vb) > 2) or min(len(va), len(vb)) < 2:
        va, vb = list(ra["samples"] or []), list(rb["samples"] or [])  # the same unit on both sides
    test = log_ratio_test(va, vb)
    line |= test
    line["ratio"] = rb["median_s"] / ra["median_s"]
    if math.isfinite(test["se"]):
        half = t_quantile(0.975, test["df"]) * test["se"] if test["se"] > 0 else 0.0
        line["ci_low"], line["ci_high"] = line["ratio"] * math.exp(-half), line["ratio"] * math.exp(half)
        line["p_slower"] = p_greater(test, threshold)
        line["p_faster"] = _p_less(test, 1.0 / threshold)
        line["p_same"] = max(_p_less(test, threshold), p_greater(test, 1.0 / threshold))
    if line["p_slower"] < alpha:
        line["verdict"] = "slower"
    elif line["p_faster"] < alpha:
        line["verdict"] = "faster"
    elif line["p_same"] < alpha:
        line["verdict"] = "same"
    else:
        line["verdict"] = UNSURE
    return line


def regressions(table: pd.DataFrame, factor: float, alpha: float = ALPHA) -> pd.DataFrame:
    """Cases slower by more than ``factor`` with significance (one-sided test of ``other > factor x
    base`` at ``alpha``), and cases that were correct in the base run and are wrong or errored now."""
    if table.empty:
        return table
    p = [p_greater({"log_ratio": t["log_ratio"], "se": t["se"], "df": t["df"]}, factor)
         if isinstance(t["se"], float) and math.isfinite(t["se"]) else math.nan for _, t in table.iterrows()]
    table = table.assign(p_regression=p)
    slow = (table["ratio"] > factor) & (table["p_regression"] < alpha)
    broke = (table["base_status"] == "ok") & table["other_status"].isin(["wrong", "error"])
    return table[slow | broke]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Geometric mean of the ratios per other run and device, per backend, and over everything."""
    timed = table.dropna(subset=["ratio"])
    rows = []
    for by in (["other"], ["other", "device"], ["other", "device", "backend"]):
        for key, g in timed.groupby(by, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            d = dict(zip(by, key))
            rows.append({"other": d["other"], "device": d.get("device", "all"), "backend": d.get("backend", "all"),
                         "cases": len(g), "geomean_ratio": geomean(g["ratio"]),
                         "slower": int((g["verdict"] == "slower").sum()), "faster": int((g["verdict"] == "faster").sum()),
                         "same": int((g["verdict"] == "same").sum()), "unsure": int((g["verdict"] == UNSURE).sum())})
    out = pd.DataFrame(rows, columns=["other", "device", "backend", "cases", "geomean_ratio", "slower", "faster",
                                      "same", "unsure"])
    return out.sort_values("other", kind="stable").reset_index(drop=True)


def unmatched(runs: Runs, base: str, other: str) -> tuple[int, int]:
    """How many rows of each run found no partner in the other."""
    a, b = runs.df[runs.df["run"] == base], runs.df[runs.df["run"] == other]
    keys = match_keys(a, b)
    ia, ib = _keyed(a, keys).index, _keyed(b, keys).index
    return len(ia.difference(ib)), len(ib.difference(ia))


_CPU_FIELDS = (("model", "CPU model"), ("family", "CPU family"), ("model_number", "CPU model number"),
               ("l2_kib", "L2 size"), ("l3_kib", "L3 size"), ("logical_cores", "CPU count"),
               ("affinity", "CPU affinity"))
#: fields every run records; the others are compared only where both runs recorded them
_CPU_ALWAYS = {"model", "logical_cores", "affinity"}


def _cpu_differences(ca: dict, cb: dict, base: str, other: str) -> list[str]:
    """One sentence for each CPU field that differs between two runs' environments."""
    return [f"{what} differs: {ca.get(k)} ({base}) vs {cb.get(k)} ({other})" for k, what in _CPU_FIELDS
            if ca.get(k) != cb.get(k) and (k in _CPU_ALWAYS or (ca.get(k) is not None and cb.get(k) is not None))]


def env_warnings(runs: Runs, base: str, other: str, table: pd.DataFrame | None = None,
                 tolerance: float = 0.10) -> list[str]:
    """What differs between two runs' environments that can move timings, one sentence each."""
    from fffbench.rowtables import blas_text

    ea, eb = runs.envs[base], runs.envs[other]
    da, db = runs.df[runs.df["run"] == base], runs.df[runs.df["run"] == other]
    out = []

    def diff(what, va, vb, plural=True):
        if va != vb:
            out.append(f"{what} {'differ' if plural else 'differs'}: {va} ({base}) vs {vb} ({other})")

    diff("machines", ea.get("machine"), eb.get("machine"))
    out += _cpu_differences(ea.get("cpu") or {}, eb.get("cpu") or {}, base, other)
    diff("thread counts", sorted(set(da["threads"])), sorted(set(db["threads"])))
    diff("dtypes", sorted(set(da["dtype"])), sorted(set(db["dtype"])))
    va, vb = ea.get("versions") or {}, eb.get("versions") or {}
    for k in sorted(set(va) | set(vb)):
        diff(f"{k} version", va.get(k), vb.get(k), plural=False)
    diff("BLAS", blas_text(ea), blas_text(eb), plural=False)
    if table is not None and len(table):
        t = table[(table["other"] == other) & table["base_impl"].notna()]
        for backend, g in t[t["base_impl"] != t["other_impl"]].groupby("backend"):
            r = g.iloc[0]
            out.append(f"{backend} ran on different implementations: {r['base_impl']} ({base}) vs "
                       f"{r['other_impl']} ({other})")
    gpu = lambda e, k: [g.get(k) for g in e.get("gpus") or []]
    for k, what in (("name", "GPUs"), ("driver", "GPU drivers"), ("cuda", "CUDA versions"),
                    ("max_clocks_mhz", "GPU clocks")):
        diff(what, gpu(ea, k), gpu(eb, k))
    diff("thread/BLAS environment variables", ea.get("env_vars") or {}, eb.get("env_vars") or {})
    for dev in sorted(set(ea.get("ceilings") or {}) & set(eb.get("ceilings") or {})):
        xa, xb = ea["ceilings"][dev], eb["ceilings"][dev]
        pairs = [("copy bandwidth", xa.get("copy_gbps"), xb.get("copy_gbps"))]
        pairs += [(f"{k} GEMM rate", v, (xb.get("gemm_gflops") or {}).get(k)) for k, v in (xa.get("gemm_gflops") or {}).items()]
        for what, x, y in pairs:
            if x and y and abs(y / x - 1) > tolerance:
                out.append(f"measured {dev} {what} differs by {y / x - 1:+.0%} ({x:.4g} vs {y:.4g}): "
                           "load, clocks or the machine changed")
    ga, gb = (ea.get("git") or {}).get("commit"), (eb.get("git") or {}).get("commit")
    if ga != gb:
        out.append(f"note: different commits ({str(ga)[:12]} vs {str(gb)[:12]})")
    return out
