"""The routing figure: how rows spread over the leaves (shares by rank) and how many nodes of each
level a batch visits, for each model layer and input, against uniform routing."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fffbench.model_report import leaf_shares, routing_table
from fffbench.plots.style import COLORS, RUN_STYLES, STYLE, empty, title, width
from fffbench.runs import Runs

#: lines drawn at most (the table has every record)
MAX_LINES = len(COLORS)


def _label(r) -> str:
    layer = f"L{int(r['layer_index'])}" if r["layer_index"] == r["layer_index"] and r["layer_index"] is not None else ""
    where = "in encoder" if r["source"] == "encoder" else str(r["input"])
    return f"{layer} {where}".strip()


def routing_data(runs: Runs) -> pd.DataFrame:
    """One line per drawn point: ``panel`` (leaves: share of rows by leaf rank; levels: distinct nodes
    over the most possible), the record's ``label``, ``x``, ``y`` and ``uniform`` (what uniform
    routing gives). Layer records first; encoder layers when a run has no others."""
    table = routing_table(runs)
    if table.empty:
        return pd.DataFrame()
    recs = {r.get("key"): r for r in runs.routing}
    chosen = table[table["source"] == "layer"] if (table["source"] == "layer").any() else table
    out = []
    for _, r in chosen.head(MAX_LINES).iterrows():
        rec, label = recs.get(r["key"], {}), _label(r)
        shares = leaf_shares(rec)
        for rank, s in enumerate(shares, 1):
            if s > 0:
                out.append({"run": r["run"], "label": label, "panel": "leaves", "x": rank, "y": float(s),
                            "uniform": 1.0 / len(shares)})
        for lv in rec.get("levels") or []:
            out.append({"run": r["run"], "label": label, "panel": "levels", "x": lv["level"],
                        "y": lv["distinct"] / lv["possible"], "uniform": lv["uniform"] / lv["possible"]})
    return pd.DataFrame(out)


def plot_routing(runs: Runs, data: pd.DataFrame | None = None):
    data = routing_data(runs) if data is None else data
    fig = Figure(figsize=(width(10.6), 4.6), layout="constrained")
    if data.empty:
        return empty(fig, fig.add_subplot(), "no routing statistics in these runs"), data
    ax_leaf, ax_lvl = fig.subplots(1, 2)
    labels = list(dict.fromkeys(data["label"]))
    run_list = list(dict.fromkeys(data["run"]))
    for (run, label), d in data.groupby(["run", "label"], sort=False):
        style = {"color": COLORS[labels.index(label) % len(COLORS)],
                 "linestyle": RUN_STYLES[run_list.index(run) % len(RUN_STYLES)], "linewidth": 1.3}
        leaf = d[d["panel"] == "leaves"]
        if len(leaf):
            ax_leaf.plot(leaf["x"], leaf["y"], label=label if len(run_list) == 1 else f"{label} ({run})", **style)
        lvl = d[d["panel"] == "levels"]
        ax_lvl.plot(lvl["x"], lvl["y"], marker="o", markersize=3, **style)
    for ax, panel in ((ax_leaf, "leaves"), (ax_lvl, "levels")):
        u = data[data["panel"] == panel].drop_duplicates("x").sort_values("x")
        if len(u):
            ax.plot(u["x"], u["uniform"], **STYLE["uniform"])
    ax_leaf.set_xscale("log")
    ax_leaf.set_yscale("log")
    ax_leaf.set_xlabel("leaf rank (most visited first)")
    ax_leaf.set_ylabel("share of rows (mean over trees)")
    ax_leaf.set_title("rows per leaf", fontsize=10)
    ax_lvl.set_xlabel("tree level")
    ax_lvl.set_ylabel("distinct nodes visited / most possible")
    ax_lvl.set_ylim(0, 1.05)
    ax_lvl.set_xticks(sorted({int(x) for x in data.loc[data["panel"] == "levels", "x"]}))
    ax_lvl.set_title("nodes a batch visits per level", fontsize=10)
    for ax in (ax_leaf, ax_lvl):
        ax.grid(alpha=0.3, which="both")
    handles, names = ax_leaf.get_legend_handles_labels()
    handles.append(Line2D([], [], label="uniform routing", **STYLE["uniform"]))
    ax_lvl.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.suptitle(f"FFF routing of model layers\n{title(runs, data)}", fontsize=10)
    return fig, data


__all__ = ["MAX_LINES", "plot_routing", "routing_data"]
