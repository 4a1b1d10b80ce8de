"""Comparing stored runs: two machines, or one machine before and after a change.

Cases are matched across runs on everything that defines the work (layer, batch, dtype, device,
input, seed, backend, regime; threads too when both runs used the same thread counts). Per matched
case: both medians, the ratio ``other / base`` (> 1: slower in ``other``) with a bootstrap interval,
and Mann-Whitney U tests on the raw samples. A case is *slower* when the ratio exceeds the threshold
and the one-sided test of ``other > threshold x base`` is significant, so a real but tiny drift is
not called a regression; summaries are geometric means of the ratios. Differences in what moves
timings (threads, dtypes, library versions, BLAS, clocks, ceilings) are reported as warnings.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from fffbench import report as R
from fffbench.timing.stats import ratio_ci

KEYS = ["family", "width", "dout", "bias", "hidden", "depth", "trees", "batch", "dtype", "device", "input", "seed",
        "backend", "l2", "launch"]
ALPHA, THRESHOLD = 0.05, 1.10


def _keyed(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.assign(**{k: df[k].astype(float).fillna(-1) for k in ("hidden", "depth", "trees")})
    return df.drop_duplicates(keys, keep="last").set_index(keys, drop=False)


def _u(a, b, alternative: str) -> float:
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(mannwhitneyu(a, b, alternative=alternative).pvalue)


def match_keys(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The matching axes: threads only when both runs used the same set of thread counts."""
    return KEYS + (["threads"] if set(a["threads"]) == set(b["threads"]) else [])


def compare_runs(runs: R.Runs, base: str | None = None, others=None, threshold: float = THRESHOLD,
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
            ra, rb = a.loc[key], b.loc[key]
            out.append(_line(dict(zip(keys, key)), base, other, ra, rb, threshold, alpha))
    cols = ["base", "other", "case", "device", "dtype", "batch", "backend", "base_status", "other_status", "base_ms",
            "other_ms", "ratio", "ci_low", "ci_high", "p_value", "p_slower", "p_faster", "verdict"]
    return pd.DataFrame(out, columns=cols + (list(out[0].keys() - set(cols)) if out else []))


def _line(key, base, other, ra, rb, threshold, alpha) -> dict:
    layer = R.layer_label({"family": key["family"], "hidden": key["hidden"], "depth": key["depth"],
                           "trees": key["trees"]})
    regime = "" if (key["l2"], key["launch"]) == ("warm", "eager") else f" {key['l2']}-L2/{key['launch']}"
    line = {"base": base, "other": other, "case": f"{layer} B={key['batch']} d={key['width']}{regime}",
            "device": key["device"], "dtype": key["dtype"], "batch": key["batch"], "backend": key["backend"],
            "base_status": ra["status"], "other_status": rb["status"], "base_ms": ra["median_s"] * 1e3,
            "other_ms": rb["median_s"] * 1e3, "ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "p_value": math.nan, "p_slower": math.nan, "p_faster": math.nan,
            "base_row": ra["row_id"], "other_row": rb["row_id"], "threads": f"{ra['threads']} / {rb['threads']}"}
    if ra["status"] != "ok" or rb["status"] != "ok":
        same = ra["status"] == rb["status"]
        line["verdict"] = "not timed" if same else f"{ra['status']} -> {rb['status']}"
        return line
    sa, sb = ra["samples"], rb["samples"]
    if isinstance(sa, list) and isinstance(sb, list) and sa and sb:
        sa, sb = np.asarray(sa, float), np.asarray(sb, float)
        line["ratio"], line["ci_low"], line["ci_high"] = ratio_ci(sb, sa)
        line["p_value"] = _u(sb, sa, "two-sided")
        line["p_slower"] = _u(sb, threshold * sa, "greater")
        line["p_faster"] = _u(sb, sa / threshold, "less")
    else:
        line["ratio"] = rb["median_s"] / ra["median_s"]
    if line["ratio"] > threshold and line["p_slower"] < alpha:
        line["verdict"] = "slower"
    elif line["ratio"] < 1 / threshold and line["p_faster"] < alpha:
        line["verdict"] = "faster"
    else:
        line["verdict"] = "same"
    return line


def regressions(runs: R.Runs, table: pd.DataFrame, factor: float, alpha: float = ALPHA) -> pd.DataFrame:
    """Cases slower by more than ``factor`` with significance (U test of ``other > factor x base``
    at ``alpha``), and cases that were correct in the base run and are wrong or errored now."""
    if table.empty:
        return table
    samples = {(r, i): s for r, i, s in zip(runs.df["run"], runs.df["row_id"], runs.df["samples"])}
    p = []
    for _, t in table.iterrows():
        a, b = samples.get((t["base"], t["base_row"])), samples.get((t["other"], t["other_row"]))
        ok = isinstance(a, list) and isinstance(b, list) and t["ratio"] > factor
        p.append(_u(np.asarray(b, float), factor * np.asarray(a, float), "greater") if ok else math.nan)
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
                         "cases": len(g), "geomean_ratio": R.geomean(g["ratio"]),
                         "slower": int((g["verdict"] == "slower").sum()), "faster": int((g["verdict"] == "faster").sum()),
                         "same": int((g["verdict"] == "same").sum())})
    out = pd.DataFrame(rows, columns=["other", "device", "backend", "cases", "geomean_ratio", "slower", "faster",
                                      "same"])
    return out.sort_values("other", kind="stable").reset_index(drop=True)


def unmatched(runs: R.Runs, base: str, other: str) -> tuple[int, int]:
    """How many rows of each run found no partner in the other."""
    a, b = runs.df[runs.df["run"] == base], runs.df[runs.df["run"] == other]
    keys = match_keys(a, b)
    ia, ib = _keyed(a, keys).index, _keyed(b, keys).index
    return len(ia.difference(ib)), len(ib.difference(ia))


def env_warnings(runs: R.Runs, base: str, other: str, tolerance: float = 0.10) -> list[str]:
    """What differs between two runs' environments that can move timings, one sentence each."""
    ea, eb = runs.envs[base], runs.envs[other]
    da, db = runs.df[runs.df["run"] == base], runs.df[runs.df["run"] == other]
    out = []

    def diff(what, va, vb):
        if va != vb:
            out.append(f"{what} differ: {va} ({base}) vs {vb} ({other})")

    diff("machines", ea.get("machine"), eb.get("machine"))
    ca, cb = ea.get("cpu") or {}, eb.get("cpu") or {}
    for k in ("model", "logical_cores", "affinity"):
        diff(f"CPU {k.replace('_', ' ')}", ca.get(k), cb.get(k))
    diff("thread counts", sorted(set(da["threads"])), sorted(set(db["threads"])))
    diff("dtypes", sorted(set(da["dtype"])), sorted(set(db["dtype"])))
    va, vb = ea.get("versions") or {}, eb.get("versions") or {}
    for k in sorted(set(va) | set(vb)):
        diff(f"{k} versions", va.get(k), vb.get(k))
    blas = lambda e: sorted({f"{b.get('internal_api')} {b.get('version')} x{b.get('num_threads')}"
                             for b in e.get("blas") or []})
    diff("BLAS libraries", blas(ea), blas(eb))
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


# --- rendering -------------------------------------------------------------------------------------------

def to_markdown(runs: R.Runs, table: pd.DataFrame, threshold: float, alpha: float, figure=None,
                failed: pd.DataFrame | None = None, factor: float | None = None) -> str:
    from fffbench.render import fmt_x, md_table, num

    base = table["base"].iloc[0] if len(table) else runs.labels[0]
    out = [f"# fffbench compare: {base} against {', '.join(o for o in runs.labels if o != base)}", "",
           (f"Ratio = other time / {base} time (> 1: slower), ratio of medians with a 95% bootstrap interval. "
           f"*slower* / *faster*: beyond {threshold:g}x and significant (one-sided Mann-Whitney U on the raw samples, "
           f"alpha {alpha:g}); p: two-sided U test of any difference."), ""]
    for other in [o for o in runs.labels if o != base]:
        warns = env_warnings(runs, base, other)
        na, nb = unmatched(runs, base, other)
        out += [f"## {other} ({runs.machine(other)}) against {base} ({runs.machine(base)})", ""]
        out += [f"- **warning**: {w}" if not w.startswith("note") else f"- {w}" for w in warns] or ["- environments match"]
        if na or nb:
            out.append(f"- unmatched rows: {na} only in {base}, {nb} only in {other}")
        out.append("")
    s = summary(table)
    if len(s):
        out += ["## Geometric means", "", md_table(s.assign(geomean_ratio=s["geomean_ratio"].map(lambda v: fmt_x(v)))), ""]
    if len(table):
        t = pd.DataFrame({"other": table["other"], "case": table["case"], "device": table["device"],
                          "dtype": table["dtype"], "backend": table["backend"],
                          f"{base} ms": table["base_ms"].map(lambda v: num(v, 4)),
                          "other ms": table["other_ms"].map(lambda v: num(v, 4)),
                          "ratio [95% CI]": [fmt_x(*v) for v in zip(table["ratio"], table["ci_low"], table["ci_high"])],
                          "p (U)": table["p_value"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
                          "verdict": table["verdict"]})
        out += ["## Cases", "", md_table(t), ""]
    if factor is not None:
        if failed is not None and len(failed):
            f = pd.DataFrame({"other": failed["other"], "case": failed["case"], "backend": failed["backend"],
                              "ratio [95% CI]": [fmt_x(*v) for v in zip(failed["ratio"], failed["ci_low"],
                                                                        failed["ci_high"])],
                              f"p (U, other > {factor:g}x base)": failed["p_regression"].map(
                                  lambda v: "" if pd.isna(v) else f"{v:.2g}"),
                              "status": failed["base_status"] + " -> " + failed["other_status"]})
            out += [f"## Regressions beyond {factor:g}x", "", md_table(f), ""]
        else:
            out += [f"No case is slower than {factor:g}x with significance, and none became wrong.", ""]
    if figure:
        out += [f"![comparison]({figure})", ""]
    return "\n".join(out)


def plot_compare(table: pd.DataFrame, runs: R.Runs, threshold: float = THRESHOLD):
    """Ratio per case with its interval on a log axis, coloured by verdict; returns (Figure, data)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    data = table.dropna(subset=["ratio"]).reset_index(drop=True)
    fig = Figure(figsize=(9, 1.2 + 0.28 * max(len(data), 3)), layout="constrained")
    ax = fig.add_subplot()
    colors = {"slower": "#d62728", "faster": "#2ca02c", "same": "#1f77b4"}
    labels = [f"{c} | {b}" + (f" ({o})" if data["other"].nunique() > 1 else "")
              for c, b, o in zip(data["case"], data["backend"], data["other"])]
    y = np.arange(len(data))[::-1]
    for verdict, color in colors.items():
        m = (data["verdict"] == verdict).to_numpy()
        if m.any():
            d = data[m]
            ax.errorbar(d["ratio"], y[m], xerr=[(d["ratio"] - d["ci_low"]).fillna(0).clip(lower=0),
                                                 (d["ci_high"] - d["ratio"]).fillna(0).clip(lower=0)],
                        fmt="o", color=color, capsize=3, label=verdict)
    ax.axvline(1, color="0.3", linewidth=0.8)
    for x in (threshold, 1 / threshold):
        ax.axvline(x, color="0.5", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("time ratio: other run / base run (log scale; > 1 is slower)")
    base = data["base"].iloc[0] if len(data) else runs.labels[0]
    others = list(dict.fromkeys(data["other"])) if len(data) else runs.labels[1:]
    machines = list(dict.fromkeys(runs.machine(r) for r in [base] + others))
    ax.set_title(f"{', '.join(others)} against {base}\n{'; '.join(machines)}", fontsize=9)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "1235" else ""))
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.5", linestyle=":", label=f"threshold {threshold:g}x"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(axis="x", which="both", alpha=0.3)
    return fig, data
