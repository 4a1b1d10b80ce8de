"""Tables computed from stored rows: median times and the suite's speedup comparisons.

Pure functions of DataFrames (no measuring here). A speedup is ``median(FF) / median(FFF)`` with a
bootstrap interval from the raw samples; "best" picks the fastest correct backend of a family on
the same device, dtype, batch and thread count.
"""
from __future__ import annotations

import math

import pandas as pd

from fffbench.suite import BEST, Comparison
from fffbench.timing.stats import ratio_ci

#: the axes two rows must share to be compared
MATCH = ["device", "dtype", "batch", "width", "input", "seed", "threads"]


def layer_label(r) -> str:
    if r["family"] == "ff":
        return f"FF H={int(r['hidden'])}"
    return f"FFF {int(r['trees'])}x{int(r['depth'])}"


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


def _pick(rows: pd.DataFrame, backend: str) -> pd.Series | None:
    """The row of ``backend`` among ``rows``, or the fastest correct one for 'best-ff'/'best-fff'."""
    if backend in BEST:
        ok = rows[(rows["status"] == "ok") & (rows["backend_family"] == BEST[backend])]
        return ok.loc[ok["median_s"].idxmin()] if len(ok) else None
    sel = rows[rows["backend"] == backend]
    return sel.iloc[0] if len(sel) else None


def comparison_table(df: pd.DataFrame, comparisons: list[Comparison], samples: dict | None = None) -> pd.DataFrame:
    """Every comparison of the suite on every matching (device, dtype, batch, ...) group."""
    rows = []
    if samples is None and "samples" in df:
        samples = dict(zip(df["row_id"], df["samples"]))
    samples = samples or {}
    # one regime per comparison: the warm one (CPU wall clock or GPU warm L2)
    df = df[df["regime"].fillna("").str.contains("warm")]
    for key, grp in df.groupby(MATCH + ["run_id"], dropna=False):
        ff_rows, fff_rows = grp[grp["family"] == "ff"], grp[grp["family"] == "fff"]
        for comp in comparisons:
            if comp.device and comp.device != key[0]:
                continue
            hiddens = [comp.hidden] if comp.hidden else sorted(ff_rows["hidden"].dropna().unique())
            for h in hiddens:
                ffh = ff_rows[ff_rows["hidden"] == h]
                for (depth, trees), fffl in fff_rows.groupby(["depth", "trees"]):
                    rows.append(_compare(comp, dict(zip(MATCH + ["run_id"], key)), h, depth, trees,
                                         _pick(ffh, comp.numerator), _pick(fffl, comp.denominator), samples))
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


def _name(backend, requested) -> str:
    return backend if isinstance(backend, str) else requested


def fmt_speedup(r) -> str:
    if not math.isfinite(r["speedup"]):
        return "n/a"
    if math.isfinite(r.get("ci_low", math.nan)):
        return f"{r['speedup']:.2f}x [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    return f"{r['speedup']:.2f}x"


def fmt_paper(r) -> str:
    if r.get("paper") is None or (isinstance(r["paper"], float) and math.isnan(r["paper"])):
        return ""
    tag = " (secondary)" if r.get("paper_secondary") else ""
    return f"{r['paper']:g}x{tag}"


def print_summary(df: pd.DataFrame, comparisons, machine: str, console=None) -> None:
    """The end-of-run tables: median times per (device, dtype, batch, threads), then the comparisons."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    times = times_table(df)
    for (device, dtype, batch, threads), grp in times.groupby(["device", "dtype", "batch", "threads"], sort=False):
        t = Table(title=f"{device}, {dtype}, batch {batch}, {threads} threads: median time per call on {machine}",
                  title_justify="left")
        for col in ("layer", "backend", "level", "status", "median ms", "IQR ms", "GB/s", "GFLOP/s", "rel err",
                    "path agree"):
            t.add_column(col, justify="right" if col not in ("layer", "backend", "level", "status") else "left")
        for _, r in grp.iterrows():
            if r["status"] == "ok":
                vals = [f"{r['median_ms']:.4g}" + ("*" if r["noisy"] else ""), f"{r['iqr_ms']:.2g}",
                        f"{r['GB/s']:.3g}", f"{r['GFLOP/s']:.3g}", f"{r['rel_err']:.1e}",
                        "" if pd.isna(r["path_agree"]) else f"{r['path_agree']:.4f}"]
            else:
                vals = [r["reason"][:70], "", "", "", "", ""]
            t.add_row(r["layer"], r["backend"], str(r["level"]), r["status"], *vals)
        console.print(t)
    console.print("* noisy: the 95% interval of the median is wider than 10% of it")
    comp = comparison_table(df, comparisons)
    measured = set(df.loc[df["status"] == "ok", "device"])
    for device in sorted(set(comp.get("device", [])) - measured):
        console.print(f"no comparison on {device}: nothing was measured there")
    comp = comp[comp["device"].isin(measured)] if len(comp) else comp
    if len(comp):
        c = Table(title=f"Speedups (FF time / FFF time) on {machine}", title_justify="left")
        for col in ("comparison", "device", "dtype", "batch", "FF", "FFF", "speedup [95% CI]", "paper",
                    "neuron limit"):
            c.add_column(col)
        for _, r in comp.iterrows():
            c.add_row(r["label"], r["device"], r["dtype"], str(r["batch"]),
                      f"{_name(r['ff_backend'], r['numerator'])} H={r['ff_hidden']}",
                      f"{_name(r['fff_backend'], r['denominator'])} {r['fff']}",
                      fmt_speedup(r) if not r["note"] else r["note"], fmt_paper(r), f"{r['neuron_limit']:.0f}x")
        console.print(c)
