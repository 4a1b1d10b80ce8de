"""Regenerate the result tables in README.md from the committed runs under results/.

    python scripts/readme_tables.py            # rewrite README.md between the RESULTS markers
    python scripts/readme_tables.py --check    # exit 1 if README.md is out of date (the tests run this)

Every number in the README's results section comes from here, so it cannot drift from the stored
rows: the tests fail if someone edits a figure by hand or commits a run without regenerating.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fffbench.model_report import end_to_end_table
from fffbench.render import md_table
from fffbench.render_model import end_to_end_section
from fffbench.report import comparison_table, figure_values
from fffbench.runs import layer_label, load
from fffbench.timing.regime import Regime

BEGIN, END = "<!-- RESULTS:BEGIN (scripts/readme_tables.py) -->", "<!-- RESULTS:END -->"


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return ""
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.3g} ms"


def _regime(r: str) -> str:
    regime = Regime.parse(r)
    return "wall clock" if regime.timer == "wall" else f"{regime.l2} L2, {regime.launch}"


def _x(v, lo, hi) -> str:
    return f"{v:.3g}x" + (f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def run_section(path: Path, show: set[str]) -> str:
    runs = load(path)
    label = runs.labels[0]
    env, df = runs.envs[label], runs.df
    cpu = env.get("ceilings", {})
    lines = [f"### `{path.relative_to(ROOT)}`", "",
             f"Suite `{env['suite']['name']}`, measured on **{env.get('machine')}**"
             + (f" (devices: {', '.join(env['device_filter'])})" if env.get("device_filter") else "") + ". "
             + "; ".join(f"{dev} ceilings: copy {c['copy_gbps']:.0f} GB/s, GEMM "
                         + ", ".join(f"{k} {v / 1e3:.3g} TFLOP/s" for k, v in c.get("gemm_gflops", {}).items())
                         for dev, c in cpu.items() if "copy_gbps" in c) + ".", "",
             ]
    regimes = list(dict.fromkeys(df["regime"]))
    head = ["device", "dtype", "batch", "layer", "backend", "level", "status"] + \
        [f"median, {_regime(r)}" for r in regimes] + ["GB/s (first regime)", "% copy BW", "rel err", "path agree"]
    if "table" in show:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(f"{len(df)} rows ({', '.join(f'{n} {k}' for k, n in df['status'].value_counts().items())});"
                     " the figures below are drawn from them by `fffbench report`.")
    keys = ["device", "dtype", "batch", "family", "hidden", "depth", "trees", "backend"]
    for _, g in (df.groupby(keys, sort=False, dropna=False) if "table" in show else []):
        r = g.iloc[0]
        bw = (cpu.get(r["device"]) or {}).get("copy_gbps")
        ok = r["status"] == "ok"
        by = dict(zip(g["regime"], g["median_s"]))
        lines.append("| " + " | ".join([
            r["device"], r["dtype"], str(r["batch"]), layer_label(r), f"`{r['backend']}`", str(r["level"]),
            r["status"] if ok else f"{r['status']}: {str(r['reason'])[:70]}",
            *[_fmt_time(by.get(x, math.nan)) if ok else "" for x in regimes],
            f"{r['gbps']:.0f}" if ok else "", f"{100 * r['gbps'] / bw:.1f}%" if ok and bw else "",
            f"{r['rel_err']:.1e}" if ok else "",
            "" if pd.isna(r["path_agreement"]) or not ok else f"{r['path_agreement']:.4f}"]) + " |")
    comp = comparison_table(runs)
    if len(comp):
        comp = comp[comp["note"] == ""]
    if len(comp) and "comparisons" in show:
        by_batch = comp["batch"].nunique() > 1  # a batch sweep: each comparison once per batch size
        if by_batch:
            comp = comp.sort_values(["batch"], kind="stable")
        lines += ["", f"| comparison |{' batch |' if by_batch else ''} device | dtype | FF | FFF | speedup [95% CI] | "
                  "paper | neuron limit |", "|---|" + ("---|" if by_batch else "") + "---|---|---|---|---|---|---|"]
        for _, c in comp.iterrows():
            paper = "" if c["paper"] is None or pd.isna(c["paper"]) else (
                f"{c['paper']:g}x" + (" (secondary)" if c["paper_secondary"] else ""))
            batch = f" {int(c['batch'])} |" if by_batch else ""
            lines.append(f"| {c['label']} |{batch} {c['device']} | {c['dtype']} | `{c['ff_backend']}` H={c['ff_hidden']} | "
                         f"`{c['fff_backend']}` {c['fff']} | {_x(c['speedup'], c['ci_low'], c['ci_high'])} | "
                         f"{paper} | {c['neuron_limit']:.0f}x |")
    figs_measured = figure_values(runs)
    figs_measured = figs_measured[figs_measured["measured"].notna() & figs_measured["device"].notna()]
    if len(figs_measured) and "comparisons" in show:
        lines += ["", "| the paper's figure | what | measured here [95% CI] | FF / FFF backends |", "|---|---|---|---|"]
        for _, f in figs_measured.iterrows():
            lines.append(f"| {f['paper']:g}x{' (secondary)' if f['secondary'] else ''} | {f['what']} | "
                         f"{_x(f['measured'], f['ci_low'], f['ci_high'])} | `{f['ff_backend']}` / `{f['fff_backend']}` |")
    if "model" in show:
        for sec in end_to_end_section(end_to_end_table(runs))[1:]:
            lines += ["", f"End to end: {sec.title}.", "", md_table(sec.table), "", *sec.notes]
    report = path / "report"
    figs = [p for p in ("speedups.png", "scaling.png", "batch.png") if (report / p).exists()]
    if figs and "figures" in show:
        lines += ["", " ".join(f"![{p[:-4]}]({(report / p).relative_to(ROOT)})" for p in figs)]
    return "\n".join(lines)


def runs_in_readme() -> list[tuple[Path, set[str]]]:
    """The committed runs the README shows: each results/ directory holding a README-SHOW file,
    whose words say what to show (table, comparisons, model: the end-to-end table, figures)."""
    return [(p.parent, set(p.read_text().split())) for p in sorted((ROOT / "results").glob("*/README-SHOW"))]


def render() -> str:
    body = "\n\n".join(run_section(p, show) for p, show in runs_in_readme())
    return f"{BEGIN}\n{body}\n{END}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render() + text[end:]
    if args.check:
        if new != text:
            print("README.md results are out of date: run python scripts/readme_tables.py", file=sys.stderr)
            sys.exit(1)
        return
    readme.write_text(new)


if __name__ == "__main__":
    main()
