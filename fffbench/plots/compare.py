"""``fffbench compare``'s figure: each case's time ratio with its interval, coloured by verdict."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from fffbench.plots.style import empty, width

THRESHOLD = 1.10


def plot_compare(table, runs, threshold: float = THRESHOLD):
    """Ratio per case with its interval on a log axis, coloured by verdict; returns (Figure, data)."""
    data = table.dropna(subset=["ratio"]).reset_index(drop=True)
    fig = Figure(figsize=(width(9), 1.2 + 0.28 * max(len(data), 3)), layout="constrained")
    ax = fig.add_subplot()
    if data.empty:
        return empty(fig, ax, "no case was timed in both runs: nothing to compare (see the unmatched rows)"), data
    colors = {"slower": "#d62728", "faster": "#2ca02c", "same": "#1f77b4", "too few samples to tell": "#7f7f7f"}
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
    lo, hi = np.nanmin(data[["ratio", "ci_low"]].to_numpy()), np.nanmax(data[["ratio", "ci_high"]].to_numpy())
    if hi / lo < 3:  # a narrow range shows no power of ten: label 1 and the thresholds instead
        ax.set_xticks([1 / threshold, 1, threshold], [f"{1 / threshold:.3g}", "1", f"{threshold:g}"])
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "1235" else ""))
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.5", linestyle=":", label=f"threshold {threshold:g}x"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(axis="x", which="both", alpha=0.3)
    return fig, data
