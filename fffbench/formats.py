"""The report's file formats: Markdown, CSV (the long numeric tables, one file each), LaTeX, and
one self-contained HTML page (tables, notes, figures embedded as SVG) to send to a colleague."""
from __future__ import annotations

import html
from pathlib import Path

from fffbench.render import UNPAIRED, Section, md_table
from fffbench.render_model import report_sections
from fffbench.runs import Runs

FORMATS = ("md", "csv", "latex", "html")


def _title(runs: Runs) -> str:
    return ", ".join(f"{run} ({runs.machine(run)})" for run in runs.envs)


INTRO = ("Speedups are FF time / FFF time: paired ratios (both rows timed together, round by round, in several "
         "fresh worker processes) with a 95% re-run interval over the processes (where a second run of as many "
         "processes lands 95% of the time); summaries are geometric means. Only correct (status ok) rows are compared.")


def to_markdown(runs: Runs, secs: list[Section], figures=()) -> str:
    out = [f"# fffbench report: {_title(runs)}", "", INTRO, ""]
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
    return s.replace("—", "---").replace("×", r"$\times$").replace(UNPAIRED, r"$^\circ$")


def to_latex(runs: Runs, secs: list[Section]) -> str:
    out = [r"\documentclass{article}", r"\usepackage[landscape,margin=1.5cm]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage[utf8]{inputenc}", r"\begin{document}", r"\small", rf"\section*{{fffbench report: {_tex(_title(runs))}}}"]
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


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
        "tr:nth-child(even) td{background:#fafafa}.note{color:#555;font-size:13px;margin:.2em 0}"
        "figure{margin:1em 0}figure svg{max-width:100%;height:auto}h1{font-size:22px}h2{font-size:18px}"
        "h3{font-size:15px}")


def _cell(v) -> str:
    return html.escape(str(v)).replace("*secondary*", "<em>secondary</em>")


def to_html(runs: Runs, secs: list[Section], figures=()) -> str:
    """One self-contained page: every table, the notes, the figures embedded as SVG."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>fffbench report: {esc(_title(runs))}</title><style>{_CSS}</style></head><body>",
           f"<h1>fffbench report: {esc(_title(runs))}</h1>", f'<p class="note">{esc(INTRO)}</p>']
    for s in secs:
        h = min(max(s.level, 2), 4)
        out.append(f'<h{h} id="{esc(s.name)}">{esc(s.title)}</h{h}>')
        if not s.table.empty:
            out.append(f'<table class="{esc(s.name)}"><thead><tr>'
                       + "".join(f"<th>{esc(str(c))}</th>" for c in s.table.columns) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                    for row in s.table.itertuples(index=False)]
            out.append("</tbody></table>")
        out += [f'<p class="note">{_cell(n)}</p>' for n in s.notes]
    svgs = [Path(f) for f in figures if str(f).endswith(".svg")]
    if svgs:
        out.append("<h2>Plots</h2>")
        for f in svgs:
            text = f.read_text()
            text = text[text.find("<svg"):]
            out.append(f'<figure id="figure-{esc(f.stem)}">{text}<figcaption>{esc(f.stem)}</figcaption></figure>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(runs: Runs, out, fmt: str = "md", figures=()) -> list[Path]:
    """Write the report in ``fmt`` under ``out``; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    secs = report_sections(runs)
    if fmt in ("md", "latex", "html"):
        name, text = {"md": ("report.md", lambda: to_markdown(runs, secs, figures)),
                      "latex": ("report.tex", lambda: to_latex(runs, secs)),
                      "html": ("report.html", lambda: to_html(runs, secs, figures))}[fmt]
        path = out / name
        path.write_text(text())
        return [path]
    written = {}
    for s in secs:
        if s.name not in written:
            path = out / f"{s.name}.csv"
            s.data.drop(columns=[c for c in ("samples", "processes") if c in s.data]).to_csv(path, index=False)
            written[s.name] = path
    return list(written.values())
