"""Rendering: the report's tables (from :mod:`fffbench.report`) as Markdown, CSV or LaTeX, and the
end-of-run summary printed by ``fffbench run``.

Only formatting lives here; every number comes from a DataFrame computed elsewhere, so what is
printed is what the tests check. CSV keeps the long, numeric tables (one file each); Markdown and
LaTeX lay them out for reading (Table 2 as in the paper).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fffbench import report as R
from fffbench.report import environment_items

FORMATS = ("md", "csv", "latex")
DAGGER = {"best FFF": "†", "best FF": "‡"}


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
    threads = f"{int(key['threads'])} thread{'s' if key['threads'] != 1 else ''}"
    out = "" if key["dout"] == key["width"] else f", out {key['dout']}"
    regime = "" if (key["l2"], key["launch"]) == ("warm", "eager") else \
        f", {key['l2']} L2" + (", CUDA graph" if key["launch"] == "graph" else ", eager launches")
    return f"{key['dtype']}, batch {key['batch']}, d={key['width']}{out}, {threads}, {key['input']} input{regime}"


def table2_sections(levels: pd.DataFrame, runs: R.Runs) -> list[Section]:
    """Table 2 as in the paper, one table per setting and baseline FF width."""
    out = []
    if levels.empty:
        return out
    keys = R.GROUP + ["baseline_hidden"]
    for key, cells in levels.groupby(keys, dropna=False, sort=False):
        key = dict(zip(keys, key))
        cols = list(dict.fromkeys(cells["column"]))
        devices = list(dict.fromkeys(cells["device"]))
        rows = []
        for config, c in cells.groupby("config", sort=False):
            first = c.iloc[0]
            line = {"configuration": config + (" (baseline)" if config == f"FF H={key['baseline_hidden']}" else "")}
            lim = f"{first['neuron_limit']:.3g}x"
            if _ok(first["paper_limit"]):
                lim += f"; paper {first['paper_limit']:g}x"
            line["neuron limit"] = lim
            for d in devices:
                roof = c.loc[c["device"] == d, "roofline_limit"]
                line[f"roofline limit {R.DEVICE_NAMES.get(d, d)}"] = num(roof.iloc[0]) + "x" if _ok(roof.iloc[0]) else ""
            for col in cols:
                r = c[c["column"] == col].iloc[0]
                if _ok(r["speedup"]):
                    cell = fmt_x(r["speedup"], r["ci_low"], r["ci_high"]) + DAGGER.get(r["vs"], "")
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
        out.append(Section("table2", title, pd.DataFrame(rows), cells, notes, level=3))
    return out


def best_section(best: pd.DataFrame, summary: pd.DataFrame) -> list[Section]:
    if best.empty:
        return [Section("best", "Best against best", pd.DataFrame(), best, ["nothing was timed"])]
    t = pd.DataFrame({
        "run": best["run"], "device": best["device"].map(lambda d: R.DEVICE_NAMES.get(d, d)),
        "dtype": best["dtype"], "batch": best["batch"], "threads": best["threads"], "FF H": best["ff_hidden"],
        "FFF": best["fff"],
        "fastest FF": [f"{b} {num(m)} ms" if _ok(m) else "" for b, m in zip(best["ff_backend"], best["ff_ms"])],
        "fastest FFF": [f"{b} {num(m)} ms" if _ok(m) else "" for b, m in zip(best["fff_backend"], best["fff_ms"])],
        "speedup [95% CI]": [fmt_x(*v) or n for *v, n in zip(best["speedup"], best["ci_low"], best["ci_high"],
                                                                best["note"])],
        "paper": [fmt_paper(v, s) for v, s in zip(best["paper"], best["paper_secondary"])],
        "neuron limit": best["neuron_limit"].map(lambda v: num(v) + "x"),
        "roofline limit": best["roofline_limit"].map(lambda v: num(v) + "x" if _ok(v) else ""),
    })
    if best["run"].nunique() == 1:
        t = t.drop(columns="run")
    g = summary.assign(device=summary["device"].map(lambda d: R.DEVICE_NAMES.get(d, d)))
    gt = pd.DataFrame({"run": g["run"], "device": g["device"], "comparisons": g["n"],
                       "geometric mean": g["geomean"].map(lambda v: fmt_x(v)),
                       "min": g["min"].map(lambda v: fmt_x(v)), "max": g["max"].map(lambda v: fmt_x(v))})
    return [Section("best", "Best against best", t, best,
                    ["Fastest correct FFF against fastest correct FF on the same device, dtype, batch and threads."]),
            Section("best_geomean", "Best against best: geometric mean over the rows above", gt, summary, level=3)]


def paper_section(paper: pd.DataFrame) -> Section:
    t = pd.DataFrame({
        "paper's figure": [f"{v:g}x" + (" (*secondary*)" if s else "") for v, s in zip(paper["paper"], paper["secondary"])],
        "what": paper["what"], "source": paper["source"],
        "measured here [95% CI]": [fmt_x(m, paper.get("ci_low", pd.Series(math.nan, paper.index))[i],
                                         paper.get("ci_high", pd.Series(math.nan, paper.index))[i]) or n
                                   for i, (m, n) in enumerate(zip(paper["measured"], paper["note"]))],
        "FF / FFF backends": [f"{a} / {b}" if _ok(a) and _ok(b) else ""
                              for a, b in zip(paper.get("ff_backend", [None] * len(paper)),
                                              paper.get("fff_backend", [None] * len(paper)))],
    })
    return Section("paper", "The paper's figures beside this run", t, paper,
                   ["Figures marked *secondary* come from a secondary source, not the paper itself."])


def comparisons_section(comp: pd.DataFrame, measured: set) -> Section:
    """The suite's own comparisons on the devices where something was timed."""
    notes = [f"No comparison on {d}: nothing was timed there." for d in sorted(set(comp.get("device", [])) - measured)]
    comp = comp[comp["device"].isin(measured)] if len(comp) else comp
    if comp.empty:
        return Section("comparisons", "Comparisons declared by the suite", pd.DataFrame(), comp, notes or ["none"])
    t = pd.DataFrame({
        "comparison": comp["label"], "device": comp["device"], "dtype": comp["dtype"], "batch": comp["batch"],
        "FF": [f"{b if _ok(b) else n} H={h}" for b, n, h in zip(comp["ff_backend"], comp["numerator"],
                                                                comp["ff_hidden"])],
        "FFF": [f"{b if _ok(b) else n} {f}" for b, n, f in zip(comp["fff_backend"], comp["denominator"], comp["fff"])],
        "speedup [95% CI]": [fmt_x(s, lo, hi) or n for s, lo, hi, n in
                             zip(comp["speedup"], comp["ci_low"], comp["ci_high"], comp["note"])],
        "paper (as the suite states)": [fmt_paper(v, s) for v, s in zip(comp["paper"], comp["paper_secondary"])],
        "neuron limit": comp["neuron_limit"].map(lambda v: num(v) + "x"),
    })
    return Section("comparisons", "Comparisons declared by the suite", t, comp, notes)


def times_section(times: pd.DataFrame, untimed: pd.DataFrame) -> list[Section]:
    out = []
    if not times.empty:
        t = pd.DataFrame({
            "device": times["device"], "dtype": times["dtype"], "batch": times["batch"], "threads": times["threads"],
            "layer": times["layer"], "backend": times["backend"], "level": times["level"], "regime": times["regime"],
            "median ms [95% CI]": [f"{num(m, 4)}{'*' if n else ''} [{num(lo, 4)}, {num(hi, 4)}]" for m, lo, hi, n in
                                   zip(times["median_ms"], times["ci_low_ms"], times["ci_high_ms"], times["noisy"])],
            "GB/s (of copy)": [f"{num(g)} ({v:.1%})" if _ok(v) else num(g) for g, v in zip(times["gbps"], times["bw_frac"])],
            "GFLOP/s (of GEMM)": [f"{num(g)} ({v:.1%})" if _ok(v) else num(g)
                                  for g, v in zip(times["gflops"], times["gemm_frac"])],
            "roofline floor ms": times["floor_ms"].map(lambda v: num(v)),
            "x floor": times["x_floor"].map(lambda v: num(v)),
        })
        if times["run"].nunique() > 1:
            t.insert(0, "run", times["run"])
        if times["regime"].nunique() == 1:
            t = t.drop(columns="regime")
        out.append(Section("times", "Absolute times", t, times, [
            "* noisy: the 95% interval of the median is wider than 10% of it.",
            ("GB/s: compulsory bytes (x read, y written, touched weights once) per second; GFLOP/s: 2 per multiply-add. "
            "Fractions are of this run's measured copy bandwidth and GEMM rate; blank where none was measured."),
            "Roofline floor: the larger of FLOPs at the GEMM rate and bytes at the copy bandwidth."]))
    if not untimed.empty:
        out.append(Section("untimed", "Rows not timed", untimed.drop(columns="run") if untimed["run"].nunique() == 1
                           else untimed, untimed, [("skipped: unavailable here; wrong: failed the correctness gate "
                                                   "(never timed); error: raised.")], level=3))
    return out


def env_section(runs: R.Runs) -> Section:
    items = [(run, k, v) for run, env in runs.envs.items() for k, v in environment_items(env)]
    data = pd.DataFrame(items, columns=["run", "item", "value"])
    t = data.drop(columns="run") if len(runs.envs) == 1 else data
    return Section("environment", "Environment", t, data, level=2)


def sections(runs: R.Runs) -> list[Section]:
    """Every table of the report, in reading order."""
    levels = R.level_table(runs)
    best = R.best_table(runs)
    comp = pd.concat([R.comparison_table(runs.df[runs.df["run"] == run],
                                         R.suite_comparisons(_suite_text(runs.envs[run])))
                      for run in runs.envs], ignore_index=True)
    head = Section("table2", "Table 2: level-matched speedups (FF time / FFF time)", pd.DataFrame(), levels, [
        ("As in the paper: one row per configuration, one column per implementation level. Each cell is the "
        "baseline FF's time at that level over this configuration's time at that level (ratio of medians, "
        "95% bootstrap interval), with the paper's figure beside it where this is the paper's setting."),
        ("Neuron limit: baseline width / neurons used per row. Roofline limit: the baseline's FLOPs at the measured "
        "GEMM rate over this layer's compulsory bytes at the measured copy bandwidth (blank without ceilings).")]
        + [f"Environment ({run}): {R.env_footnote(env)}" for run, env in runs.envs.items()])
    return ([head] + table2_sections(levels, runs) + best_section(best, R.geomean_summary(best))
            + [paper_section(R.paper_table(runs, levels)),
               comparisons_section(comp, set(runs.df.loc[runs.df["status"] == "ok", "device"]))]
            + times_section(R.absolute_table(runs), R.untimed_table(runs)) + [env_section(runs)])


def _suite_text(env: dict) -> str:
    p = Path(env.get("_path", "")) / "suite.yaml"
    return p.read_text() if p.exists() else ""


# --- formats -------------------------------------------------------------------------------------------

def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(runs: R.Runs, secs: list[Section], figures=()) -> str:
    names = ", ".join(f"{run} ({runs.machine(run)})" for run in runs.envs)
    out = [f"# fffbench report: {names}", "",
           ("Speedups are FF time / FFF time: ratios of medians with a 95% bootstrap interval from the raw samples; "
           "summaries are geometric means. Only correct (status ok) rows are compared."), ""]
    for s in secs:
        out += ["#" * s.level + " " + s.title, ""]
        if not s.table.empty:
            out += [md_table(s.table), ""]
        out += [n + "  " for n in s.notes] + ([""] if s.notes else [])
    if figures:
        out += ["## Plots", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures if str(f).endswith(".png")]
    return "\n".join(out).rstrip() + "\n"


def _tex(v) -> str:
    s = str(v)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b)
    s = s.replace("*secondary*", r"\emph{secondary}").replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$")
    return s.replace("—", "---").replace("×", r"$\times$")


def to_latex(runs: R.Runs, secs: list[Section]) -> str:
    names = ", ".join(f"{run} ({runs.machine(run)})" for run in runs.envs)
    out = [r"\documentclass{article}", r"\usepackage[landscape,margin=1.5cm]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage[utf8]{inputenc}", r"\begin{document}", r"\small", rf"\section*{{fffbench report: {_tex(names)}}}"]
    for s in secs:
        out.append((r"\subsection*{" if s.level <= 2 else r"\subsubsection*{") + _tex(s.title) + "}")
        if not s.table.empty:
            out += [r"\begin{tabular}{" + "l" * len(s.table.columns) + "}", r"\toprule",
                    " & ".join(_tex(c) for c in s.table.columns) + r" \\", r"\midrule"]
            out += [" & ".join(_tex(v) for v in row) + r" \\" for row in s.table.itertuples(index=False)]
            out += [r"\bottomrule", r"\end{tabular}", ""]
        out += [_tex(n) + r"\par" for n in s.notes]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def write_report(runs: R.Runs, out, fmt: str = "md", figures=()) -> list[Path]:
    """Write the report in ``fmt`` under ``out``; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    secs = sections(runs)
    if fmt == "md":
        path = out / "report.md"
        path.write_text(to_markdown(runs, secs, figures))
        return [path]
    if fmt == "latex":
        path = out / "report.tex"
        path.write_text(to_latex(runs, secs))
        return [path]
    written = {}
    for s in secs:
        if s.name not in written:
            path = out / f"{s.name}.csv"
            s.data.drop(columns=[c for c in ("samples",) if c in s.data]).to_csv(path, index=False)
            written[s.name] = path
    return list(written.values())


# --- the end-of-run summary ------------------------------------------------------------------------------

def print_summary(df: pd.DataFrame, comparisons, machine: str, console=None) -> None:
    """The end-of-run tables: median times per (device, dtype, batch, threads), then the comparisons."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    times = R.times_table(df)
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
    comp = R.comparison_table(df, comparisons)
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
                      f"{r['ff_backend'] or r['numerator']} H={r['ff_hidden']}",
                      f"{r['fff_backend'] or r['denominator']} {r['fff']}",
                      fmt_x(r["speedup"], r["ci_low"], r["ci_high"]) if not r["note"] else r["note"],
                      fmt_paper(r["paper"], r["paper_secondary"]).replace("*", ""), f"{r['neuron_limit']:.0f}x")
        console.print(c)
