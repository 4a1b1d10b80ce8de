"""Figures from stored runs: the 78x/40x speedup comparison, cost growth against the number of
neurons, and speedup against batch size.

Each figure has a ``*_data`` function (a DataFrame of exactly what is drawn, computed by
:mod:`fffbench.report`) and a ``plot_*`` function returning ``(Figure, data)``, so tests check the
plotted numbers against the stored samples. Figures are made without pyplot (Agg canvas), so this
works headless and in notebooks alike. Several runs go on one figure; titles name the machines.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

from fffbench import report as R
from fffbench.timing.stats import median_ci

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
STYLES = ["-", "--", ":", "-."]


# --- what to show: the headline setting of each run ----------------------------------------------------

def headline(df: pd.DataFrame) -> dict:
    """The setting a summary figure shows for one run: default regime, float32 (else the most common
    dtype), gaussian input, the widest layer width, the largest FFF tree (most neurons)."""
    ok = R.warm(df[df["status"] == "ok"])
    if ok.empty:
        return {}
    pick = lambda col, pref: pref if pref in set(ok[col]) else ok[col].value_counts().idxmax()
    key = {"dtype": pick("dtype", "float32"), "input": pick("input", "gaussian"), "width": ok["width"].max()}
    sel = ok[(ok["dtype"] == key["dtype"]) & (ok["input"] == key["input"]) & (ok["width"] == key["width"])]
    key |= {"seed": sel["seed"].min(), "threads": sel["threads"].max()}
    fff = sel[sel["family"] == "fff"].sort_values(["neurons_total", "trees"], ascending=[False, True])
    if len(fff):
        key |= {"depth": int(fff["depth"].iloc[0]), "trees": int(fff["trees"].iloc[0]),
                "fff_neurons": int(fff["neurons_total"].iloc[0])}
    return key


def _select(table: pd.DataFrame, run: str, key: dict) -> pd.DataFrame:
    if table.empty or "depth" not in key:
        return table.iloc[0:0]
    m = (table["run"] == run) & (table["l2"] == "warm") & (table["launch"] == "eager")
    for k in ("dtype", "input", "width", "seed", "threads", "depth", "trees"):
        m &= table[k] == key[k]
    return table[m]


def matched_hidden(hiddens, key: dict, device=None, level=None, best=False) -> int | None:
    """The FF width to set against the headline FFF: the paper's for this comparison where it was
    measured, else the width closest to the tree's node count (the paper's 4095 for 1x11)."""
    hiddens = sorted(int(h) for h in hiddens)
    if not hiddens:
        return None
    for f in R.PAPER:
        if (f.kind == "speedup" and f.device == device and f.level == level and (f.fff_level == "best") == best
                and (f.depth, f.trees) == (key["depth"], key["trees"]) and f.hidden in hiddens):
            return f.hidden
    return min(hiddens, key=lambda h: (abs(math.log(h / key["fff_neurons"])), h))


# --- 1. level-matched and best-against-best speedups (the 78x / 40x figure) ------------------------------

def speedup_data(runs: R.Runs, levels: pd.DataFrame | None = None, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per bar: each run's level-matched speedups (every level column) and best-against-best
    speedups (every device) for its headline FFF at its largest batch, with limits and paper figures."""
    levels = R.level_table(runs) if levels is None else levels
    best = R.best_table(runs) if best is None else best
    out = []
    for run in runs.labels:
        key = headline(runs.df[runs.df["run"] == run])
        lv, bt = _select(levels, run, key), _select(best, run, key)
        if lv.empty:
            continue
        batch = lv["batch"].max()
        lv = lv[(lv["batch"] == batch) & (lv["config_family"] == "fff")]
        bt = bt[bt["batch"] == batch] if len(bt) else bt
        common = {"run": run, "machine": runs.machine(run), "batch": batch, "dtype": key["dtype"],
                  "fff": f"{key['trees']}x{key['depth']}"}
        for (device, level), c in lv.groupby(["device", "level"], sort=False):
            h = matched_hidden(c["baseline_hidden"].unique(), key, device, level, best=(c["vs"] == "best FFF").any())
            r = c[c["baseline_hidden"] == h].iloc[0]
            if not np.isfinite(r["speedup"]):
                continue
            mark = {"best FFF": " †", "best FF": " ‡"}.get(r["vs"], "")
            out.append(common | {"kind": "level-matched", "group": f"{r['column']}{mark}\nH={h}", "device": device,
                                 "level": level, "ff_hidden": h} | _bar(r))
        for device, c in bt.groupby("device", sort=False):
            h = matched_hidden(c["ff_hidden"].unique(), key, device, {"cpu": "cpu-l3", "cuda": "gpu-native"}.get(device),
                               best=True)
            r = c[c["ff_hidden"] == h].iloc[0]
            if np.isfinite(r["speedup"]):
                out.append(common | {"kind": "best vs best", "device": device, "level": "best", "ff_hidden": h,
                                     "group": f"{R.DEVICE_NAMES.get(device, device)} best vs best\nH={h}"} | _bar(r))
    return pd.DataFrame(out)


def _bar(r) -> dict:
    return {k: r[k] for k in ("ff_backend", "fff_backend", "speedup", "ci_low", "ci_high", "neuron_limit",
                              "roofline_limit", "paper", "paper_secondary")}


def _yerr(d: pd.DataFrame) -> np.ndarray:
    lo = (d["speedup"] - d["ci_low"]).fillna(0).clip(lower=0)
    hi = (d["ci_high"] - d["speedup"]).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(), hi.to_numpy()])


def _title(runs: R.Runs, data: pd.DataFrame | None = None) -> str:
    labels = data["run"].unique() if data is not None and len(data) else runs.labels
    machines = list(dict.fromkeys(runs.machine(r) for r in labels))
    return "; ".join(machines)


def plot_speedups(runs: R.Runs, data: pd.DataFrame | None = None):
    """Grouped bars on a log scale from 1x: level-matched then best-against-best speedups, one bar per
    run, 95% intervals as error bars, the paper's figures as stars, limits as line segments."""
    data = speedup_data(runs) if data is None else data
    fig = Figure(figsize=(max(7.0, (0.9 + 0.25 * data["run"].nunique()) * data["group"].nunique() + 3.5)
                          if len(data) else 7.0, 5.8),
                 layout="constrained")
    ax = fig.add_subplot()
    if data.empty:
        return _empty(fig, ax, "no FFF and FF rows to compare"), data
    groups = list(dict.fromkeys(data.sort_values("kind", kind="stable", key=lambda k: k != "level-matched")["group"]))
    run_list = list(dict.fromkeys(data["run"]))
    width = 0.8 / len(run_list)
    for i, run in enumerate(run_list):
        d = data[data["run"] == run]
        x = np.array([groups.index(g) for g in d["group"]]) - 0.4 + width * (i + 0.5)
        label = f"{run}: {d['machine'].iloc[0]}" if len(run_list) > 1 else "measured (95% CI)"
        ax.bar(x, d["speedup"] - 1, width * 0.9, bottom=1, color=COLORS[i % len(COLORS)], label=label,
               yerr=_yerr(d), capsize=3, ecolor="0.2")
        for xi, roof in zip(x, d["roofline_limit"]):
            if np.isfinite(roof):
                ax.hlines(roof, xi - width / 2, xi + width / 2, colors="0.25", linestyles=":", linewidth=2)
    for g in groups:
        d = data[data["group"] == g]
        xg = groups.index(g)
        ax.hlines(d["neuron_limit"].iloc[0], xg - 0.45, xg + 0.45, colors="k", linestyles="--", linewidth=1.2)
        p = d.dropna(subset=["paper"])
        if len(p):
            sec = bool(p["paper_secondary"].iloc[0])
            ax.plot([xg], [p["paper"].iloc[0]], marker="*", markersize=15, color="goldenrod" if not sec else "white",
                    markeredgecolor="k", linestyle="none")
            ax.annotate(f"paper {p['paper'].iloc[0]:g}x" + (" (secondary)" if sec else ""), (xg, p["paper"].iloc[0]),
                        textcoords="offset points", xytext=(9, -3), fontsize=8)
    n_level = sum(1 for g in groups if (data.loc[data["group"] == g, "kind"] == "level-matched").any())
    if 0 < n_level < len(groups):
        ax.axvline(n_level - 0.5, color="0.6", linewidth=0.8)
    ax.axhline(1, color="0.3", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("speedup: FF time / FFF time (log scale)")
    ax.grid(axis="y", which="both", alpha=0.3)
    first = data.iloc[0]
    ax.set_title(f"FFF {first['fff']} speedups, batch {first['batch']}, {first['dtype']}: level-matched | best vs best"
                 f"\n{_title(runs, data)}", fontsize=10)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", linestyle="--", label="neuron-ratio limit")]
    if data["roofline_limit"].notna().any():
        handles.append(Line2D([], [], color="0.25", linestyle=":", linewidth=2,
                              label="roofline limit (measured ceilings)"))
    for secondary, color in ((False, "goldenrod"), (True, "white")):
        if (data.dropna(subset=["paper"])["paper_secondary"] == secondary).any():
            handles.append(Line2D([], [], marker="*", markersize=12, color=color, markeredgecolor="k",
                                  linestyle="none", label="paper's figure" + (" (secondary)" if secondary else "")))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    note = "H: the FF hidden width"
    if data["group"].str.contains("†|‡").any():
        note = "† no FFF at this level: the fastest FFF.   ‡ no FF at this level: the fastest FF.   " + note
    ax.set_xlabel(note, fontsize=8)
    return fig, data


# --- 2. cost growth ----------------------------------------------------------------------------------

def scaling_data(runs: R.Runs) -> pd.DataFrame:
    """Median time (and its 95% interval from the samples) against the layer's neurons (FF hidden
    width, FFF tree nodes) for every backend, device and batch of each run's headline setting."""
    out = []
    for run in runs.labels:
        df = runs.df[runs.df["run"] == run]
        key = headline(df)
        if not key:
            continue
        ok = R.warm(df[df["status"] == "ok"])
        for k in ("dtype", "input", "width", "seed", "threads"):
            ok = ok[ok[k] == key[k]]
        for _, r in ok.iterrows():
            lo, hi = median_ci(r["samples"]) if isinstance(r["samples"], list) else (r["ci_low_s"], r["ci_high_s"])
            out.append({"run": run, "machine": r["machine"], "device": r["device"], "batch": r["batch"],
                        "family": r["family"], "backend": r["backend"], "layer": R.layer_label(r),
                        "neurons": r["neurons_total"], "median_ms": r["median_s"] * 1e3, "ci_low_ms": lo * 1e3,
                        "ci_high_ms": hi * 1e3})
    return pd.DataFrame(out).sort_values(["run", "device", "batch", "backend", "neurons"]) if out else pd.DataFrame()


def plot_scaling(runs: R.Runs, data: pd.DataFrame | None = None):
    """Log-log time against neurons, one panel per (device, batch): dense FF grows linearly with its
    width, FFF with the logarithm of its tree size."""
    data = scaling_data(runs) if data is None else data
    if data.empty:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        return _empty(fig, fig.add_subplot(), "no timed rows"), data
    devices = sorted(data["device"].unique(), key=lambda d: list(R.DEVICE_NAMES).index(d) if d in R.DEVICE_NAMES else 9)
    batches = sorted(data["batch"].unique())
    fig = Figure(figsize=(3.6 * len(batches) + 2.6, 3.4 * len(devices) + 0.9), layout="constrained")
    axes = fig.subplots(len(devices), len(batches), squeeze=False, sharex=True)
    backends = list(dict.fromkeys(data.sort_values("family")["backend"]))
    run_list = list(dict.fromkeys(data["run"]))
    for i, dev in enumerate(devices):
        for j, b in enumerate(batches):
            ax = axes[i][j]
            for (run, be), d in data[(data["device"] == dev) & (data["batch"] == b)].groupby(["run", "backend"]):
                fam = d["family"].iloc[0]
                ax.errorbar(d["neurons"], d["median_ms"],
                            yerr=[d["median_ms"] - d["ci_low_ms"], d["ci_high_ms"] - d["median_ms"]],
                            color=COLORS[backends.index(be) % len(COLORS)], marker="o" if fam == "ff" else "s",
                            linestyle=STYLES[run_list.index(run) % len(STYLES)], markersize=4, capsize=2)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _int_ticks(ax.xaxis, data["neurons"].unique())
            ax.grid(which="both", alpha=0.3)
            ax.set_title(f"{R.DEVICE_NAMES.get(dev, dev)}, batch {b}", fontsize=9)
            if i == len(devices) - 1:
                ax.set_xlabel("neurons (FF hidden width / FFF tree nodes)", fontsize=8)
            if j == 0:
                ax.set_ylabel("median time per call (ms)", fontsize=8)
    handles = [Line2D([], [], color=COLORS[k % len(COLORS)], marker="o" if b.startswith("ff-") else "s", label=b)
               for k, b in enumerate(backends)]
    handles += [Line2D([], [], color="0.3", linestyle=STYLES[k % len(STYLES)], label=f"{r}: {runs.machine(r)}")
                for k, r in enumerate(run_list)] if len(run_list) > 1 else []
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=min(len(handles), 5),
               title="backend (circles: FF, squares: FFF)" + ("; line style: run" if len(run_list) > 1 else ""),
               title_fontsize=8)
    fig.suptitle(f"Cost growth: FF linear in its width, FFF logarithmic in its tree size\n{_title(runs, data)}",
                 fontsize=10)
    return fig, data


# --- 3. speedup against batch size ---------------------------------------------------------------------

def batch_data(runs: R.Runs, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best-against-best speedup of each run's headline FFF (against the matched FF width) per
    device and batch size, with both limits."""
    best = R.best_table(runs) if best is None else best
    out = []
    for run in runs.labels:
        key = headline(runs.df[runs.df["run"] == run])
        bt = _select(best, run, key)
        for device, c in (bt.groupby("device", sort=False) if len(bt) else []):
            h = matched_hidden(c["ff_hidden"].unique(), key, device, {"cpu": "cpu-l3", "cuda": "gpu-native"}.get(device),
                               best=True)
            for _, r in c[c["ff_hidden"] == h].sort_values("batch").iterrows():
                out.append({"run": run, "machine": runs.machine(run), "device": device, "batch": r["batch"],
                            "ff_hidden": h, "fff": r["fff"]} | _bar(r))
    return pd.DataFrame(out)


def plot_batch(runs: R.Runs, data: pd.DataFrame | None = None):
    """Speedup against batch size on log axes, one line per device (and run); dashed: roofline limit."""
    data = batch_data(runs) if data is None else data
    fig = Figure(figsize=(8.2, 5), layout="constrained")
    ax = fig.add_subplot()
    if data.empty:
        return _empty(fig, ax, "no best-against-best speedups"), data
    lines = list(dict.fromkeys(zip(data["run"], data["device"])))
    multi = data["run"].nunique() > 1
    for k, (run, dev) in enumerate(lines):
        d = data[(data["run"] == run) & (data["device"] == dev)].dropna(subset=["speedup"])
        color = COLORS[k % len(COLORS)]
        name = R.DEVICE_NAMES.get(dev, dev) + (f" ({run})" if multi else "")
        ax.errorbar(d["batch"], d["speedup"], yerr=_yerr(d), color=color, marker="o", capsize=3,
                    label=f"{name}: FF H={d['ff_hidden'].iloc[0]} / FFF {d['fff'].iloc[0]}")
        if d["roofline_limit"].notna().any():
            ax.plot(d["batch"], d["roofline_limit"], color=color, linestyle="--", label=f"{name}: roofline limit")
    for lim in data["neuron_limit"].unique():
        ax.axhline(lim, color="k", linestyle=":", linewidth=1.2)
        ax.annotate(f"neuron-ratio limit {lim:.3g}x", (data["batch"].min(), lim), textcoords="offset points",
                    xytext=(2, 3), fontsize=8)
    ax.axhline(1, color="0.3", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _int_ticks(ax.xaxis, data["batch"].unique())
    ax.set_xlabel("batch size (rows per call, log scale)")
    ax.set_ylabel("speedup: best FF time / best FFF time (log scale)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.set_title(f"Best FFF against best FF by batch size, {data['fff'].iloc[0]}\n{_title(runs, data)}", fontsize=10)
    return fig, data


def _int_ticks(axis, values, most: int = 8) -> None:
    """Plain integer labels on a log axis: at the data's values when there are few, else powers of ten
    (matplotlib's default labels a narrow log range with overlapping 3.2x10^3-style minor labels)."""
    values = sorted(int(v) for v in values)
    axis.set_minor_formatter(NullFormatter())
    if len(values) <= most:
        axis.set_ticks(values, [str(v) for v in values])
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# --- files ----------------------------------------------------------------------------------------------

def _empty(fig, ax, why: str):
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def save(fig: Figure, out, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


PLOTS = {"speedups": plot_speedups, "scaling": plot_scaling, "batch": plot_batch}


def write_plots(runs: R.Runs, out) -> list[Path]:
    """Every figure of ``runs`` as PNG and SVG under ``out``; returns the files written."""
    levels, best = R.level_table(runs), R.best_table(runs)
    figs = {"speedups": plot_speedups(runs, speedup_data(runs, levels, best))[0],
            "scaling": plot_scaling(runs)[0], "batch": plot_batch(runs, batch_data(runs, best))[0]}
    return [p for stem, fig in figs.items() for p in save(fig, out, stem)]
