"""Rendering: the report's sections (tables computed by :mod:`fffbench.report` and
:mod:`fffbench.rowtables`, laid out for reading, with their notes) and ``compare``'s Markdown.

Only formatting lives here; every number comes from a DataFrame computed elsewhere, so what is
printed is what the tests check. Footnotes appear only where their mark does. The file formats
(Markdown, CSV, LaTeX, HTML) are :mod:`fffbench.formats`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from fffbench import report as R
from fffbench import rowtables as T
from fffbench.runs import GROUP, Runs
from fffbench.timing.regime import Regime
from fffbench.vocab import device_name, plural

DAGGER = {"best FFF": "†", "best FF": "‡"}
UNPAIRED = "°"


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def num(v, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if _ok(v) else ""


def fmt_x(v, lo=math.nan, hi=math.nan) -> str:
    """A speedup with its interval: ``2.31x [2.10, 2.52]``."""
    if not _ok(v):
        return ""
    return f"{v:.3g}x" + (f" [{lo:.3g}, {hi:.3g}]" if _ok(lo) and lo != hi else "")


def fmt_paper(value, secondary) -> str:
    if not _ok(value):
        return ""
    return f"paper {value:g}x" + (" (*secondary*)" if secondary else "")


def _pairing(r) -> str:
    return "" if bool(r.get("paired", True)) or not _ok(r.get("speedup")) else UNPAIRED


@dataclass
class Section:
    """One table of the report: a title, the display table, the numbers behind it, notes."""

    name: str                 # file stem for CSV
    title: str
    table: pd.DataFrame       # strings, laid out for reading
    data: pd.DataFrame        # the numbers (written as CSV)
    notes: list[str] = field(default_factory=list)
    level: int = 2            # heading level


def _setting(key) -> str:
    out = "" if key["dout"] == key["width"] else f", out {key['dout']}"
    regime = Regime("cuda-events" if key["l2"] != "warm" or key["launch"] != "eager" else "wall",
                    key["l2"], key["launch"]).label
    model = ""
    if _ok(key.get("layer_index")):
        model = f", layer {int(key['layer_index'])} of " + (str(key["checkpoint"]).rstrip("/").rsplit("/", 1)[-1]
                                                           if _ok(key.get("checkpoint")) else "the published shapes "
                                                                                              "(random weights)")
    return (f"{key['dtype']}, batch {key['batch']}, d={key['width']}{out}, {plural(int(key['threads']), 'thread')}, "
            f"{key['input']} input" + model + (f", {regime}" if regime else ""))


def _unpaired_note(data: pd.DataFrame) -> list[str]:
    if "paired" in data and (~data["paired"].astype(bool) & data["speedup"].notna()).any():
        return [(f"{UNPAIRED} unpaired: the two rows were not timed together in the same worker processes (a run "
                 "stored before paired measurement, or rows of different groups); ratio of medians with an "
                 "interval from their samples.")]
    return []


def table2_sections(levels: pd.DataFrame, runs: Runs) -> list[Section]:
    """Table 2 as in the paper, one table per setting and baseline FF width."""
    out = []
    if levels.empty:
        return out
    keys = GROUP + ["baseline_hidden"]
    for key, cells in levels.groupby(keys, dropna=False, sort=False):
        key = dict(zip(keys, key))
        cols = list(dict.fromkeys(cells["column"]))
        devices = list(dict.fromkeys(cells["device"]))
        rows = []
        for config, c in cells.groupby("config", sort=False):
            first = c.iloc[0]
            line = {"configuration": config + (" (baseline)" if config == f"FF H={key['baseline_hidden']}" else ""),
                    "neuron limit": f"{first['neuron_limit']:.3g}x"}
            for d in devices:
                roof = c.loc[c["device"] == d, "roofline_limit"]
                line[f"roofline limit {device_name(d)}"] = num(roof.iloc[0]) + "x" if _ok(roof.iloc[0]) else ""
            for col in cols:
                r = c[c["column"] == col].iloc[0]
                if _ok(r["speedup"]):
                    cell = fmt_x(r["speedup"], r["ci_low"], r["ci_high"]) + DAGGER.get(r["vs"], "") + _pairing(r)
                    if _ok(r["paper"]):
                        cell += f"; {fmt_paper(r['paper'], r['paper_secondary'])}"
                else:
                    cell = "—" if r["note"] == "not run at this level" or not r["note"] else r["note"]
                line[col] = cell
            rows.append(line)
        title = f"{_setting(key)}: against FF H={key['baseline_hidden']}"
        if len(runs.envs) > 1:
            title += f" ({key['run']})"
        notes = []
        if (cells["vs"] == "best FFF").any():
            notes.append("† no FFF exists at this level: against the fastest correct FFF on the device, as in the paper.")
        if (cells["vs"] == "best FF").any():
            notes.append("‡ no FF exists at this level: the fastest correct FF on the device stands in.")
        if cells["paper"].notna().any():
            notes.append("A paper figure stands only in the cell whose two rows are the figure's definition "
                         "(see the paper's figures below).")
        out.append(Section("table2", title, pd.DataFrame(rows), cells, notes + _unpaired_note(cells), level=3))
    return out


def best_section(best: pd.DataFrame, summary: pd.DataFrame) -> list[Section]:
    if best.empty or best["speedup"].isna().all():
        return [Section("best", "Best against best", pd.DataFrame(), best,
                        ["Nothing to compare: no FF row and FFF row were both timed on one device."])]
    t = pd.DataFrame({
        "run": best["run"], "device": best["device"].map(device_name),
        "dtype": best["dtype"], "batch": best["batch"], "threads": best["threads"], "FF H": best["ff_hidden"],
        "FFF": best["fff"],
        "fastest FF": [f"{b} {num(m)} ms" if _ok(m) else "" for b, m in zip(best["ff_backend"], best["ff_ms"])],
        "fastest FFF": [f"{b} {num(m)} ms" if _ok(m) else "" for b, m in zip(best["fff_backend"], best["fff_ms"])],
        "speedup [95% CI]": [(fmt_x(s, lo, hi) + _pairing(r)) or r["note"] for (s, lo, hi), (_, r) in
                             zip(zip(best["speedup"], best["ci_low"], best["ci_high"]), best.iterrows())],
        "paper": [fmt_paper(v, s) for v, s in zip(best["paper"], best["paper_secondary"])],
        "neuron limit": best["neuron_limit"].map(lambda v: num(v) + "x"),
        "roofline limit": best["roofline_limit"].map(lambda v: num(v) + "x" if _ok(v) else ""),
    })
    if best["run"].nunique() == 1:
        t = t.drop(columns="run")
    if not best["paper"].notna().any():
        t = t.drop(columns="paper")
    g = summary.assign(device=summary["device"].map(device_name))
    gt = pd.DataFrame({"run": g["run"], "device": g["device"], "comparisons": g["n"],
                       "geometric mean": g["geomean"].map(lambda v: fmt_x(v)),
                       "min": g["min"].map(lambda v: fmt_x(v)), "max": g["max"].map(lambda v: fmt_x(v))})
    return [Section("best", "Best against best", t, best,
                    ["Fastest correct FFF against fastest correct FF on the same device, dtype, batch and threads."]
                    + _unpaired_note(best)),
            Section("best_geomean", "Best against best: geometric mean over the rows above", gt, summary, level=3)]


def paper_section(paper: pd.DataFrame) -> Section:
    get = lambda col: paper[col] if col in paper else pd.Series([math.nan] * len(paper), index=paper.index)
    t = pd.DataFrame({
        "paper's figure": [f"{v:g}x" + (" (*secondary*)" if s else "") for v, s in zip(paper["paper"], paper["secondary"])],
        "what": paper["what"], "source": paper["source"],
        "measured here [95% CI]": [fmt_x(m, lo, hi) or n for m, lo, hi, n in
                                   zip(paper["measured"], get("ci_low"), get("ci_high"), paper["note"])],
        "FF / FFF backends": [f"{a} / {b}" if _ok(a) and _ok(b) else "" for a, b in zip(get("ff_backend"),
                                                                                       get("fff_backend"))],
    })
    if "run" in paper and paper["run"].nunique() > 1:
        t.insert(0, "run", paper["run"].fillna(""))
    return Section("paper", "The paper's figures beside this run", t, paper,
                   [("Each figure is defined once (the FF and FFF backends, width and device it corresponds to) "
                     "and stands beside the one value measured from that definition."),
                    "Figures marked *secondary* come from a secondary source, not the paper itself."])


def comparisons_section(comp: pd.DataFrame, measured: set) -> Section:
    """The suite's own comparisons on the devices where something was timed."""
    devices = sorted(set(comp.get("device", [])) - measured)
    notes = [f"No comparison on {device_name(d)}: nothing was timed there." for d in devices]
    comp = comp[comp["device"].isin(measured)] if len(comp) else comp
    if comp.empty:
        return Section("comparisons", "Comparisons declared by the suite", pd.DataFrame(), comp,
                       notes or ["The suite declares none."])
    t = pd.DataFrame({
        "comparison": comp["label"], "device": comp["device"].map(device_name), "dtype": comp["dtype"],
        "batch": comp["batch"],
        "FF": [f"{b if _ok(b) else n} H={h}" for b, n, h in zip(comp["ff_backend"], comp["numerator"],
                                                                comp["ff_hidden"])],
        "FFF": [f"{b if _ok(b) else n} {f}" for b, n, f in zip(comp["fff_backend"], comp["denominator"], comp["fff"])],
        "speedup [95% CI]": [(fmt_x(r["speedup"], r["ci_low"], r["ci_high"]) + _pairing(r)) or r["note"]
                             for _, r in comp.iterrows()],
        "paper": [fmt_paper(v, s) for v, s in zip(comp["paper"], comp["paper_secondary"])],
        "neuron limit": comp["neuron_limit"].map(lambda v: num(v) + "x"),
    })
    if not comp["paper"].notna().any():
        t = t.drop(columns="paper")
    # a checkpoint suite compares on every model layer and input: say which row is which
    if "layer_index" in comp and comp["layer_index"].notna().any():
        t.insert(4, "model layer", [str(int(v)) if _ok(v) else "" for v in comp["layer_index"]])
    if "input" in comp and comp["input"].nunique() > 1:
        t.insert(4, "input", comp["input"])
    return Section("comparisons", "Comparisons declared by the suite", t, comp, notes + _unpaired_note(comp))


def times_section(times: pd.DataFrame, untimed: pd.DataFrame) -> list[Section]:
    out = []
    if not times.empty:
        t = pd.DataFrame({
            "device": times["device"], "dtype": times["dtype"], "batch": times["batch"], "threads": times["threads"],
            "layer": times["layer"], "backend": times["backend"], "level": times["level"],
            "regime": [Regime.parse(r).label or "default" for r in times["regime"]],
            "median ms [95% CI]": [f"{num(m, 4)}{'*' if n else ''}{'!' if a else ''} [{num(lo, 4)}, {num(hi, 4)}]"
                                   for m, lo, hi, n, a in zip(times["median_ms"], times["ci_low_ms"],
                                                              times["ci_high_ms"], times["noisy"],
                                                              times["above_ceiling"])],
            "processes": times["processes"],
            "GB/s (of copy)": [f"{num(g)} ({v:.1%})" if _ok(v) else num(g) for g, v in zip(times["gbps"], times["bw_frac"])],
            "GFLOP/s (of GEMM)": [f"{num(g)} ({v:.1%})" if _ok(v) else num(g)
                                  for g, v in zip(times["gflops"], times["gemm_frac"])],
            "roofline floor ms": times["floor_ms"].map(lambda v: num(v)),
            "x floor": times["x_floor"].map(lambda v: num(v)),
        })
        if times["run"].nunique() > 1:
            t.insert(0, "run", times["run"])
        if times["input"].nunique() > 1:  # e.g. a model layer on Gaussian rows, its norm2 rows, a capture
            t.insert(list(t.columns).index("layer") + 1, "input", times["input"])
        if times["regime"].nunique() == 1:
            t = t.drop(columns="regime")
        notes = []
        if times["noisy"].any():
            notes.append("* noisy: the 95% interval of the median is wider than 10% of it.")
        if (times["above_ceiling"] != "").any():
            notes.append("! faster than a ceiling measured at the start or the end of the run (GEMM rate or copy "
                         "bandwidth): the data fit in a cache, or the machine was loaded while the ceiling was "
                         "measured; compare with care.")
        notes += [("GB/s: compulsory bytes (x read, y written, touched weights once) per second; GFLOP/s: 2 per "
                   "multiply-add. Fractions are of this run's measured copy bandwidth and GEMM rate; blank where "
                   "none was measured."),
                  "Roofline floor: the larger of FLOPs at the GEMM rate and bytes at the copy bandwidth.",
                  "Processes: the worker processes the row was measured in; its interval spans their spread."]
        out.append(Section("times", "Absolute times", t, times, notes))
    if not untimed.empty:
        out.append(Section("untimed", "Rows not timed", untimed.drop(columns="run") if untimed["run"].nunique() == 1
                           else untimed, untimed, [("skipped: unavailable here; wrong: failed the correctness gate "
                                                   "(never timed); error: raised or crashed.")], level=3))
    return out


def env_section(runs: Runs) -> Section:
    items = [(run, k, v) for run, env in runs.envs.items()
             for k, v in T.environment_items(env) + T.implementations(runs, run)]
    data = pd.DataFrame(items, columns=["run", "item", "value"])
    t = data.drop(columns="run") if len(runs.envs) == 1 else data
    return Section("environment", "Environment", t, data, level=2)


def sections(runs: Runs) -> list[Section]:
    """Every table of the report, in reading order."""
    levels, best = R.level_table(runs), R.best_table(runs)
    head = Section("table2", "Table 2: level-matched speedups (FF time / FFF time)", pd.DataFrame(), levels, [
        ("As in the paper: one row per configuration, one column per implementation level. Each cell is the "
         "baseline FF's time at that level over this configuration's time at that level (paired ratio with its "
         "95% interval), with the paper's figure beside it where this cell is the figure's definition."),
        ("Neuron limit: baseline width / neurons used per row. Roofline limit: the baseline's FLOPs at the measured "
         "GEMM rate over this layer's compulsory bytes at the measured copy bandwidth (blank without ceilings).")]
        + [f"Environment ({run}): {T.env_footnote(env)}" for run, env in runs.envs.items()])
    measured = set(runs.df.loc[runs.df["status"] == "ok", "device"])
    return ([head] + table2_sections(levels, runs) + best_section(best, R.geomean_summary(best))
            + [paper_section(R.figure_values(runs)), comparisons_section(R.comparison_table(runs), measured)]
            + times_section(T.absolute_table(runs), T.untimed_table(runs)) + [env_section(runs)])


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)



# --- compare --------------------------------------------------------------------------------------------

def compare_markdown(runs: Runs, table: pd.DataFrame, threshold: float, alpha: float, figure=None,
                     failed: pd.DataFrame | None = None, factor: float | None = None) -> str:
    """``fffbench compare``'s report (the numbers come from :mod:`fffbench.compare`)."""
    from fffbench import compare as C

    base = table["base"].iloc[0] if len(table) else runs.labels[0]
    out = [f"# fffbench compare: {base} against {', '.join(o for o in runs.labels if o != base)}", "",
           (f"Ratio = other time / {base} time (> 1: slower), with a 95% interval. *slower* / *faster*: beyond "
            f"{threshold:g}x and significant (one-sided Welch t test on the logarithms of the timings, per worker "
            f"process where rows have several, alpha {alpha:g}); *same*: within {threshold:g}x by the equivalence "
            f"test; otherwise *{C.UNSURE}*."), ""]
    for other in [o for o in runs.labels if o != base]:
        warns = C.env_warnings(runs, base, other, table)
        na, nb = C.unmatched(runs, base, other)
        out += [f"## {other} ({runs.machine(other)}) against {base} ({runs.machine(base)})", ""]
        out += [f"- **warning**: {w}" if not w.startswith("note") else f"- {w}" for w in warns] or ["- environments match"]
        if na or nb:
            out.append(f"- unmatched rows: {na} only in {base}, {nb} only in {other}")
        out.append("")
    s = C.summary(table)
    if len(s):
        out += ["## Geometric means", "", md_table(s.assign(geomean_ratio=s["geomean_ratio"].map(lambda v: fmt_x(v)))), ""]
    if len(table):
        t = pd.DataFrame({"other": table["other"], "case": table["case"], "device": table["device"],
                          "dtype": table["dtype"], "backend": table["backend"],
                          f"{base} ms": table["base_ms"].map(lambda v: num(v, 4)),
                          "other ms": table["other_ms"].map(lambda v: num(v, 4)),
                          "ratio [95% CI]": [fmt_x(*v) for v in zip(table["ratio"], table["ci_low"], table["ci_high"])],
                          "p (slower)": table["p_slower"].map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
                          "verdict": table["verdict"]})
        if table["other"].nunique() == 1:
            t = t.drop(columns="other")
        out += ["## Cases", "", md_table(t), ""]
    if factor is not None:
        if failed is not None and len(failed):
            f = pd.DataFrame({"other": failed["other"], "case": failed["case"], "backend": failed["backend"],
                              "ratio [95% CI]": [fmt_x(*v) for v in zip(failed["ratio"], failed["ci_low"],
                                                                        failed["ci_high"])],
                              f"p (other > {factor:g}x base)": failed["p_regression"].map(
                                  lambda v: "" if pd.isna(v) else f"{v:.2g}"),
                              "status": failed["base_status"] + " -> " + failed["other_status"]})
            out += [f"## Regressions beyond {factor:g}x", "", md_table(f), ""]
        else:
            out += [f"No case is slower than {factor:g}x with significance, and none became wrong.", ""]
    if figure:
        out += [f"![comparison]({figure})", ""]
    return "\n".join(out)
