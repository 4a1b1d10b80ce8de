"""The end-of-run summary ``fffbench run`` prints: median times per workload, then the suite's
comparisons. Devices where nothing was measured are left out, in one line that says so; a
footnote is printed only where its mark is; tables wrap to the terminal (80 columns when not a
terminal) without ever cutting a backend name.
"""
from __future__ import annotations

import sys

import pandas as pd

from fffbench.paper import Comparison
from fffbench.render import fmt_paper, fmt_x
from fffbench.rowtables import times_table
from fffbench.vocab import device_name, plural


def _comparisons(df: pd.DataFrame, comparisons) -> pd.DataFrame:
    from fffbench import report
    from fffbench.runs import Runs, prepare

    runs = Runs(prepare(df), {str(df["run_id"].iloc[0]) if len(df) else "run": {
        "comparisons": [c.to_dict() if isinstance(c, Comparison) else c for c in comparisons]}})
    runs.df["run"] = runs.labels[0]
    return report.comparison_table(runs)


def print_summary(df: pd.DataFrame, comparisons, machine: str, console=None) -> None:
    """The end-of-run tables: median times per (device, dtype, batch, threads), then the comparisons."""
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=100))
    measured = set(df.loc[df["status"] == "ok", "device"])
    idle = sorted(set(df["device"]) - measured)
    times = times_table(df[df["device"].isin(measured)])
    noisy = False
    for (device, dtype, batch, threads), grp in times.groupby(["device", "dtype", "batch", "threads"], sort=False):
        t = Table(title=f"{device_name(device)}, {dtype}, batch {batch}, {plural(int(threads), 'thread')}: median time "
                        f"per call on {machine}", title_justify="left")
        t.add_column("layer", no_wrap=True)
        t.add_column("backend", no_wrap=True)
        for col in ("status", "median ms", "GB/s", "GFLOP/s", "rel err", "path agree"):
            t.add_column(col, justify="left" if col == "status" else "right", overflow="fold")
        for _, r in grp.iterrows():
            if r["status"] == "ok":
                noisy |= bool(r["noisy"])
                vals = [f"{r['median_ms']:.4g}" + ("*" if r["noisy"] else ""), f"{r['GB/s']:.3g}",
                        f"{r['GFLOP/s']:.3g}", f"{r['rel_err']:.1e}",
                        "" if pd.isna(r["path_agree"]) else f"{r['path_agree']:.4f}"]
            else:
                vals = [r["reason"][:70], "", "", "", ""]
            label = r["backend"] + (f" ({r['regime']})" if r["regime"] else "")
            t.add_row(r["layer"], label, r["status"], *vals)
        console.print(t)
    if noisy:
        console.print("* noisy: the 95% interval of the median is wider than 10% of it")
    for device in idle:
        n = int((df["device"] == device).sum())
        console.print(f"{device_name(device)}: nothing measured ({plural(n, 'row')} "
                      f"{', '.join(sorted(set(df.loc[df['device'] == device, 'status'])))}; see the report)")
    comp = _comparisons(df, comparisons) if comparisons and len(df) else pd.DataFrame()
    comp = comp[comp["device"].isin(measured)] if len(comp) else comp
    if len(comp):
        c = Table(title=f"Speedups (FF time / FFF time) on {machine}", title_justify="left")
        c.add_column("comparison", overflow="fold", ratio=2)
        for col in ("FF", "FFF"):
            c.add_column(col, no_wrap=True)
        c.add_column("speedup [95% CI]", overflow="fold", ratio=1)
        show_paper = comp["paper"].notna().any()
        if show_paper:
            c.add_column("paper", overflow="fold")
        for _, r in comp.iterrows():
            cells = [r["label"] + (f" ({device_name(r['device'])}, B={r['batch']})" if comp["batch"].nunique() > 1
                                   or comp["device"].nunique() > 1 else ""),
                     f"{r['ff_backend'] or r['numerator']} H={r['ff_hidden']}",
                     f"{r['fff_backend'] or r['denominator']} {r['fff']}",
                     fmt_x(r["speedup"], r["ci_low"], r["ci_high"]) if not r["note"] else r["note"]]
            if show_paper:
                cells.append(fmt_paper(r["paper"], r["paper_secondary"]).replace("*", ""))
            c.add_row(*cells)
        console.print(c)
