"""The 78x / 40x figure: level-matched and best-against-best speedups beside the paper's figures."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fffbench.plots.style import COLORS, STYLE, closest, empty, title, width, yerr
from fffbench.runs import Runs, layer_rows, warm
from fffbench.vocab import device_name


def headline(df: pd.DataFrame) -> dict:
    """The setting a summary figure shows for one run: default regime, float32 (else the most common
    dtype), gaussian input, the widest layer width, the largest FFF tree (most neurons)."""
    ok = warm(df[df["status"] == "ok"])
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


def select(table: pd.DataFrame, run: str, key: dict) -> pd.DataFrame:
    if table.empty or "depth" not in key:
        return table.iloc[0:0]
    m = (table["run"] == run) & (table["l2"] == "warm") & (table["launch"] == "eager")
    for k in ("dtype", "input", "width", "seed", "threads", "depth", "trees"):
        m &= table[k] == key[k]
    return table[m]


def matched(cells: pd.DataFrame, col: str, key: dict) -> int:
    """The FF width to show: the one whose cell carries a paper figure (the figure's definition),
    else the one closest to the tree's node count (4095 for 1x11)."""
    with_paper = cells[cells["paper"].notna()]
    if len(with_paper):
        return int(with_paper[col].iloc[0])
    return closest(sorted(int(h) for h in cells[col].unique()), key["fff_neurons"])


def _bar(r) -> dict:
    return {k: r[k] for k in ("ff_backend", "fff_backend", "speedup", "ci_low", "ci_high", "neuron_limit",
                              "roofline_limit", "paper", "paper_secondary", "figure")}


def speedup_data(runs: Runs, levels: pd.DataFrame | None = None, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per bar: each run's level-matched speedups (every level column) and best-against-best
    speedups (every device) for its headline FFF at its largest batch, with limits and paper figures."""
    from fffbench import report as R

    levels = R.level_table(runs) if levels is None else levels
    best = R.best_table(runs) if best is None else best
    out = []
    for run in runs.labels:
        key = headline(layer_rows(runs.df[runs.df["run"] == run]))
        lv, bt = select(levels, run, key), select(best, run, key)
        if lv.empty:
            continue
        batch = lv["batch"].max()
        lv = lv[(lv["batch"] == batch) & (lv["config_family"] == "fff")]
        bt = bt[bt["batch"] == batch] if len(bt) else bt
        common = {"run": run, "machine": runs.machine(run), "batch": batch, "dtype": key["dtype"],
                  "fff": f"{key['trees']}x{key['depth']}"}
        for (device, level), c in lv.groupby(["device", "level"], sort=False):
            h = matched(c.dropna(subset=["speedup"]) if c["speedup"].notna().any() else c, "baseline_hidden", key)
            r = c[c["baseline_hidden"] == h].iloc[0]
            if not np.isfinite(r["speedup"]):
                continue
            mark = {"best FFF": " †", "best FF": " ‡"}.get(r["vs"], "")
            out.append(common | {"kind": "level-matched", "group": f"{r['column']}{mark}\nH={h}", "device": device,
                                 "level": level, "ff_hidden": h} | _bar(r))
        for device, c in bt.groupby("device", sort=False):
            h = matched(c, "ff_hidden", key)
            r = c[c["ff_hidden"] == h].iloc[0]
            if np.isfinite(r["speedup"]):
                out.append(common | {"kind": "best vs best", "device": device, "level": "best", "ff_hidden": h,
                                     "group": f"{device_name(device)} best vs best\nH={h}"} | _bar(r))
    return pd.DataFrame(out)


def _bars(ax, data: pd.DataFrame, groups: list) -> None:
    """One bar per run in each group, labelled with its value, with its interval and roofline limit."""
    run_list = list(dict.fromkeys(data["run"]))
    bw = 0.8 / len(run_list)
    for i, run in enumerate(run_list):
        d = data[data["run"] == run]
        x = np.array([groups.index(g) for g in d["group"]]) - 0.4 + bw * (i + 0.5)
        label = f"{run}: {d['machine'].iloc[0]}" if len(run_list) > 1 else "measured (95% re-run interval)"
        ax.bar(x, d["speedup"] - 1, bw * 0.9, bottom=1, color=COLORS[i % len(COLORS)], label=label,
               yerr=yerr(d), capsize=3, ecolor="0.2")
        for xi, s, hi in zip(x, d["speedup"], d["ci_high"].fillna(d["speedup"])):
            ax.annotate(f"{s:.3g}x", (xi, max(s, hi)), textcoords="offset points", xytext=(0, 3), ha="center",
                        fontsize=7 if len(run_list) < 3 else 6)
        for xi, roof in zip(x, d["roofline_limit"]):
            if np.isfinite(roof):
                ax.hlines(roof, xi - bw / 2, xi + bw / 2, **STYLE["roofline"])


def _limits_and_paper(ax, data: pd.DataFrame, groups: list) -> None:
    """Neuron limits per group; each paper figure's star once, at the first group whose bar is its
    definition's pair (the same pair can be a level column and best against best)."""
    starred = set()
    for xg, g in enumerate(groups):
        d = data[data["group"] == g]
        ax.hlines(d["neuron_limit"].iloc[0], xg - 0.45, xg + 0.45, **STYLE["neuron"])
        p = d.dropna(subset=["paper"])
        p = p[~p["figure"].isin(starred)]
        if len(p):
            starred.update(p["figure"].dropna())
            sec = bool(p["paper_secondary"].iloc[0])
            ax.plot([xg], [p["paper"].iloc[0]], color="white" if sec else "goldenrod", **STYLE["paper"])
            ax.annotate(f"paper {p['paper'].iloc[0]:g}x" + (" (secondary)" if sec else ""), (xg, p["paper"].iloc[0]),
                        textcoords="offset points", xytext=(9, -3), fontsize=8)


def _legend(ax, data: pd.DataFrame) -> None:
    """Only what is drawn: the bars, the neuron limit, the roofline where measured, the stars shown."""
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], label="neuron-ratio limit", **STYLE["neuron"]))
    if data["roofline_limit"].notna().any():
        handles.append(Line2D([], [], label="roofline limit (measured ceilings)", **STYLE["roofline"]))
    drawn = data.dropna(subset=["paper"])
    for secondary, color in ((False, "goldenrod"), (True, "white")):
        if (drawn["paper_secondary"] == secondary).any():
            handles.append(Line2D([], [], color=color, label="paper's figure" + (" (secondary)" if secondary else ""),
                                  **STYLE["paper"]))
    # below the axes, so that the bars get the figure's whole width (names of several runs are long)
    ax.figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2 if len(handles) > 3 else
                     len(handles), frameon=False)


def _wrap(group: str) -> str:
    """A bar group's tick label on lines of at most 13 characters, so neighbours never overlap."""
    name, _, rest = group.partition("\n")
    return "\n".join(textwrap.wrap(name, 13) + ([rest] if rest else []))


def plot_speedups(runs: Runs, data: pd.DataFrame | None = None):
    """Grouped bars on a log scale from 1x, level-matched then best against best, one bar per run,
    each labelled with its value; 95% intervals as error bars, the paper's figures as stars, limits
    as line segments, and a note naming each paper figure this run did not measure."""
    from fffbench import report as R

    data = speedup_data(runs) if data is None else data
    drawn = set(data["figure"].dropna()) if "figure" in data else set()
    values = R.figure_values(runs)
    # a paper figure none of the runs measured (one run's GPU figure is not "missing" beside a CPU run),
    # and one measured whose pair is no bar here (the level's fastest FF is another backend)
    measured = set(values.loc[values["measured"].notna(), "figure"]) if len(values) else set()
    missing = values[values["device"].notna() & ~values["figure"].isin(measured | drawn)] if len(values) else values
    elsewhere = values[values["measured"].notna() & values["ff_backend"].notna() & ~values["figure"].isin(drawn)] \
        .drop_duplicates("figure") if len(values) and "ff_backend" in values else values.iloc[0:0]
    n_groups, n_runs = (data["group"].nunique(), data["run"].nunique()) if len(data) else (0, 1)
    fig = Figure(figsize=(width(max(7.0, (0.9 + 0.3 * n_runs) * n_groups + 1.2)), 6.4), layout="constrained")
    ax = fig.add_subplot()
    if data.empty:
        return empty(fig, ax, "no FFF and FF rows to compare"), data
    groups = list(dict.fromkeys(data.sort_values("kind", kind="stable", key=lambda k: k != "level-matched")["group"]))
    _bars(ax, data, groups)
    _limits_and_paper(ax, data, groups)
    n_level = sum(1 for g in groups if (data.loc[data["group"] == g, "kind"] == "level-matched").any())
    if 0 < n_level < len(groups):
        ax.axvline(n_level - 0.5, color="0.6", linewidth=0.8)
    ax.axhline(1, **STYLE["unity"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), [_wrap(g) for g in groups], fontsize=8 if len(groups) <= 8 else 7)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("speedup: FF time / FFF time (log scale)")
    ax.grid(axis="y", which="both", alpha=0.3)
    first = data.iloc[0]
    ax.set_title(f"FFF {first['fff']} speedups, batch {first['batch']}, {first['dtype']}: level-matched | best vs best"
                 f"\n{title(runs, data)}", fontsize=10)
    _legend(ax, data)
    note = "H: the FF hidden width"
    if data["group"].str.contains("†|‡").any():
        note = "† no FFF at this level: the fastest FFF.   ‡ no FF at this level: the fastest FF.   " + note
    if len(missing):
        note += "\nnot measured here: " + "; ".join(f"paper {r['paper']:g}x ({r['what']})" for _, r in
                                                   missing.drop_duplicates("figure").iterrows())
    if len(elsewhere):
        note += "\nmeasured, not a bar here (its FF is not the level's fastest): " + "; ".join(
            f"paper {r['paper']:g}x{' (secondary)' if r['secondary'] else ''}: {r['measured']:.3g}x "
            f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}] ({r['ff_backend']} / {r['fff_backend']})"
            for _, r in elsewhere.iterrows())
    # centred under the axes, which span about 90% of the figure: 8-point text runs about 15
    # characters an inch, so a line of this many characters stays inside the figure
    chars = int(fig.get_figwidth() * 0.9 * 15)
    ax.set_xlabel("\n".join(textwrap.fill(line, chars) for line in note.split("\n")), fontsize=8)
    return fig, data
