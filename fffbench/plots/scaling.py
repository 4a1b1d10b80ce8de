"""How cost grows: time against the number of neurons, and speedup against batch size."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fffbench.plots.speedups import headline, matched, select
from fffbench.plots.style import COLORS, RUN_STYLES, STYLE, empty, int_ticks, title, width, yerr
from fffbench.runs import Runs, layer_label, layer_rows, warm
from fffbench.timing.stats import median_ci
from fffbench.vocab import DEVICES, device_name


def scaling_data(runs: Runs) -> pd.DataFrame:
    """Median time (and its 95% interval) against the layer's neurons (FF hidden width, FFF tree
    nodes) for every backend, device and batch of each run's headline setting."""
    out = []
    for run in runs.labels:
        df = layer_rows(runs.df[runs.df["run"] == run])
        key = headline(df)
        if not key:
            continue
        ok = warm(df[df["status"] == "ok"])
        for k in ("dtype", "input", "width", "seed", "threads"):
            ok = ok[ok[k] == key[k]]
        for _, r in ok.iterrows():
            if r["n_processes"] == r["n_processes"] and r["n_processes"] > 1:
                lo, hi = r["ci_low_s"], r["ci_high_s"]
            else:
                lo, hi = median_ci(r["samples"]) if isinstance(r["samples"], list) else (r["ci_low_s"], r["ci_high_s"])
            out.append({"run": run, "machine": r["machine"], "device": r["device"], "batch": r["batch"],
                        "family": r["family"], "backend": r["backend"], "layer": layer_label(r),
                        "neurons": r["neurons_total"], "median_ms": r["median_s"] * 1e3, "ci_low_ms": lo * 1e3,
                        "ci_high_ms": hi * 1e3})
    return pd.DataFrame(out).sort_values(["run", "device", "batch", "backend", "neurons"]) if out else pd.DataFrame()


def plot_scaling(runs: Runs, data: pd.DataFrame | None = None):
    """Log-log time against neurons, one panel per (device, batch): dense FF grows linearly with its
    width, FFF with the logarithm of its tree size."""
    data = scaling_data(runs) if data is None else data
    if data.empty:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        return empty(fig, fig.add_subplot(), "no timed rows"), data
    devices = sorted(data["device"].unique(), key=lambda d: DEVICES.index(d) if d in DEVICES else 9)
    batches = sorted(data["batch"].unique())
    cols = min(len(batches), 4)
    panels = [(d, b) for d in devices for b in batches]
    nrows = -(-len(panels) // cols)
    # at least 7 inches: the title and a legend of four columns need it even for one panel
    fig = Figure(figsize=(width(max(7.0, 2.6 * cols + 1.2)), 2.5 * nrows + 1.4), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True)
    backends = list(dict.fromkeys(data.sort_values("family")["backend"]))
    run_list = list(dict.fromkeys(data["run"]))
    for k, (dev, b) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for (run, be), d in data[(data["device"] == dev) & (data["batch"] == b)].groupby(["run", "backend"]):
            fam = d["family"].iloc[0]
            ax.errorbar(d["neurons"], d["median_ms"], yerr=[(d["median_ms"] - d["ci_low_ms"]).clip(lower=0),
                                                             (d["ci_high_ms"] - d["median_ms"]).clip(lower=0)],
                        color=COLORS[backends.index(be) % len(COLORS)], marker="o" if fam == "ff" else "s",
                        linestyle=RUN_STYLES[run_list.index(run) % len(RUN_STYLES)], markersize=3.5, capsize=2,
                        linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        int_ticks(ax.xaxis, data["neurons"].unique())
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(which="both", alpha=0.3)
        ax.set_title(f"{device_name(dev)}, batch {b}", fontsize=8)
        if k // cols == nrows - 1:
            ax.set_xlabel("neurons (FF width / FFF nodes)", fontsize=7)
        if k % cols == 0:
            ax.set_ylabel("median per call (ms)", fontsize=7)
    for k in range(len(panels), nrows * cols):
        axes[k // cols][k % cols].set_axis_off()
    handles = [Line2D([], [], color=COLORS[k % len(COLORS)], marker="o" if data.loc[data["backend"] == b, "family"]
                      .iloc[0] == "ff" else "s", label=b) for k, b in enumerate(backends)]
    if len(run_list) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=RUN_STYLES[k % len(RUN_STYLES)], label=f"{r}: {runs.machine(r)}")
                    for k, r in enumerate(run_list)]
    fig.legend(handles=handles, loc="outside lower center", fontsize=7, ncols=min(len(handles), 4),
               title="backend (circles: FF, squares: FFF)" + ("; line style: run" if len(run_list) > 1 else ""),
               title_fontsize=7)
    fig.suptitle(f"Cost growth: FF linear in its width, FFF logarithmic in its tree size\n{title(runs, data)}",
                 fontsize=9)
    return fig, data


def batch_data(runs: Runs, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """Best-against-best speedup of each run's headline FFF (against the matched FF width) per
    device and batch size, with both limits."""
    from fffbench import report as R

    best = R.best_table(runs) if best is None else best
    out = []
    for run in runs.labels:
        key = headline(layer_rows(runs.df[runs.df["run"] == run]))
        bt = select(best, run, key)
        for device, c in (bt.groupby("device", sort=False) if len(bt) else []):
            h = matched(c, "ff_hidden", key)
            for _, r in c[c["ff_hidden"] == h].sort_values("batch").iterrows():
                out.append({"run": run, "machine": runs.machine(run), "device": device, "batch": r["batch"],
                            "ff_hidden": h, "fff": r["fff"]} | {k: r[k] for k in (
                                "ff_backend", "fff_backend", "speedup", "ci_low", "ci_high", "neuron_limit",
                                "roofline_limit", "paper", "paper_secondary")})
    return pd.DataFrame(out)


def plot_batch(runs: Runs, data: pd.DataFrame | None = None):
    """Speedup against batch size on log axes, one line per device (and run), with each device's
    roofline limit and the neuron-ratio limit (the same line styles as every figure)."""
    data = batch_data(runs) if data is None else data
    fig = Figure(figsize=(8.6, 5), layout="constrained")
    ax = fig.add_subplot()
    if data.empty:
        return empty(fig, ax, "no best-against-best speedups"), data
    lines = list(dict.fromkeys(zip(data["run"], data["device"])))
    multi = data["run"].nunique() > 1
    drew_roof = False
    for k, (run, dev) in enumerate(lines):
        d = data[(data["run"] == run) & (data["device"] == dev)].dropna(subset=["speedup"])
        if d.empty:
            continue
        color = COLORS[k % len(COLORS)]
        name = device_name(dev) + (f" ({run})" if multi else "")
        ax.errorbar(d["batch"], d["speedup"], yerr=yerr(d), color=color, marker="o", capsize=3,
                    label=f"{name}: FF H={d['ff_hidden'].iloc[0]} / FFF {d['fff'].iloc[0]}")
        roof = d.dropna(subset=["roofline_limit"])
        if len(roof):
            xs, ys = roof["batch"].to_numpy(float), roof["roofline_limit"].to_numpy(float)
            if len(roof) == 1:  # one batch size: a short dotted segment, so what the legend names is drawn
                xs, ys = np.array([xs[0] / 1.5, xs[0] * 1.5]), np.repeat(ys, 2)
            ax.plot(xs, ys, **(STYLE["roofline"] | {"color": color}))
            drew_roof = True
    for lim in data["neuron_limit"].unique():
        ax.axhline(lim, **STYLE["neuron"])
        ax.annotate(f"neuron-ratio limit {lim:.3g}x", (data["batch"].min(), lim), textcoords="offset points",
                    xytext=(2, 3), fontsize=8)
    ax.axhline(1, **STYLE["unity"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    int_ticks(ax.xaxis, data["batch"].unique(), spread=1.0)
    ax.set_xlabel("batch size (rows per call, log scale)")
    ax.set_ylabel("speedup: best FF time / best FFF time (log scale)")
    ax.grid(which="both", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], label="neuron-ratio limit", **STYLE["neuron"]))
    if drew_roof:
        handles.append(Line2D([], [], label="roofline limit (line colour: device)", **STYLE["roofline"]))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.set_title(f"Best FFF against best FF by batch size, {data['fff'].iloc[0]}\n{title(runs, data)}", fontsize=10)
    return fig, data
