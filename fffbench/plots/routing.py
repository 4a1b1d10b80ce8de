"""The routing figure: how rows spread over the leaves (shares by rank) and how many nodes of each
level a batch visits, for each routing record (a layer on an input at one batch size), against
uniform routing of the same rows over the same tree."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fffbench.model_report import leaf_shares, routing_table
from fffbench.plots.style import COLORS, RUN_STYLES, STYLE, empty, title, width
from fffbench.runs import Runs

#: lines drawn at most (the table has every record)
MAX_LINES = len(COLORS)


#: what tells two routing records apart, in the order a label names it
_PARTS = ("checkpoint", "layer_index", "input", "shape", "rows")


def _part(col: str, v) -> str:
    if v is None or v != v:
        return ""
    if col == "layer_index":
        return f"L{int(v)}"
    return f"B={int(v)}" if col == "rows" else str(v)


def _labels(chosen: pd.DataFrame) -> list[str]:
    """A label per record naming only what varies between the drawn records (layer, input, tree
    shape, batch), so that records of a batch sweep are separate lines, not one zigzag."""
    varying = [c for c in _PARTS if chosen[c].map(str).nunique() > 1]
    if not varying:
        varying = ["input"]
    return [" ".join(p for p in (_part(c, r[c]) for c in varying) if p) or "all rows" for _, r in chosen.iterrows()]


def uniform_shares(leaves: int, rows, trees=1) -> np.ndarray:
    """The leaf shares by rank that uniform routing of ``rows`` rows over ``leaves`` leaves gives,
    averaged over ``trees`` trees as the measured curve is: simulated with a fixed seed (the same
    figure every time), because with rows near the leaf count chance alone gives a Poisson
    staircase that a flat line at 1/leaves would misread as skew."""
    leaves = int(leaves)
    rows = int(rows) if rows == rows and rows else 4 * leaves
    t = max(1, min(int(trees) if trees == trees and trees else 1, 16))
    counts = np.random.default_rng(0).multinomial(rows, np.full(leaves, 1.0 / leaves), size=t)
    c = np.sort(counts, axis=1)[:, ::-1] / rows
    return c.mean(axis=0)


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
    chosen = chosen.head(MAX_LINES)
    for (_, r), label in zip(chosen.iterrows(), _labels(chosen)):
        rec = recs.get(r["key"], {})
        shares = leaf_shares(rec)
        uni = uniform_shares(len(shares), r["rows"], r["trees"]) if len(shares) else shares
        for rank, (s, u) in enumerate(zip(shares, uni), 1):
            if s > 0 or u > 0:
                out.append({"run": r["run"], "label": label, "panel": "leaves", "x": rank,
                            "y": float(s) if s > 0 else float("nan"), "uniform": float(u) if u > 0 else float("nan")})
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
        leaf = d[(d["panel"] == "leaves") & d["y"].notna()]
        if len(leaf):
            few = {"marker": "o", "markersize": 4} if len(leaf) <= 3 else {}  # a batch of one row is one point
            ax_leaf.plot(leaf["x"], leaf["y"], label=label if len(run_list) == 1 else f"{label} ({run})", **style,
                         **few)
        lvl = d[d["panel"] == "levels"]
        ax_lvl.plot(lvl["x"], lvl["y"], marker="o", markersize=3, **style)
    # uniform routing differs by batch and tree size: one line per distinct expectation
    for ax, panel in ((ax_leaf, "leaves"), (ax_lvl, "levels")):
        seen = set()
        for _, d in data[data["panel"] == panel].groupby(["run", "label"], sort=False):
            u = d.sort_values("x")[["x", "uniform"]].dropna()
            sig = tuple(map(tuple, u.round(12).to_numpy()))
            if len(u) and sig not in seen:
                seen.add(sig)
                ax.plot(u["x"], u["uniform"], **(STYLE["uniform"] | {"linewidth": 0.9}))
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
    fig.suptitle(f"FFF routing: rows per leaf and nodes visited per level\n{title(runs, data)}", fontsize=10)
    return fig, data


__all__ = ["MAX_LINES", "plot_routing", "routing_data", "uniform_shares"]
