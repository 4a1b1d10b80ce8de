"""``fffbench report``, ``plot`` and ``compare``: read stored runs, write tables and figures.

Nothing here measures: each command loads run directories (:mod:`fffbench.runs`), computes tables
(:mod:`fffbench.report`, :mod:`fffbench.compare`) and writes files (:mod:`fffbench.render`,
:mod:`fffbench.plots`). Bad input is one line ``error: ...`` and exit code 2; ``compare
--fail-on-regression`` exits 1 on a regression.
"""
from __future__ import annotations

import enum
from pathlib import Path

import typer

from fffbench.cli.app import app, fail, fail_os
from fffbench.formats import FORMATS

Format = enum.Enum("Format", [(f, f) for f in FORMATS], type=str)


def load_runs(dirs):
    """Runs of ``dirs``, or a one-line error (exit 2) naming what is wrong with a directory."""
    from fffbench.runs import load
    from fffbench.store import StoreError

    for d in dirs:
        if not Path(d).is_dir():
            fail(f"{d}: no such run directory")
    try:
        return load(*dirs)
    except (FileNotFoundError, StoreError) as e:
        fail(str(e))
    except OSError as e:
        fail_os(e)


def _wrote(paths) -> None:
    for p in paths:
        typer.echo(f"wrote {p}", err=True)


@app.command(epilog="Examples:\n\n  fffbench report results/paper-20261128-101500-myhost\n\n"
                    "  fffbench report results/<run-id> --format html --out /tmp/report\n\n"
                    "  fffbench report results/<run-id> --format csv --no-plots")
def report(run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="One or more run directories written by `fffbench run`."),
           fmt: Format = typer.Option("md", "--format", metavar="md|csv|latex|html", help="md (Markdown), csv (one file per table), latex, or "
                                                             "html (one self-contained page)."),
           out: Path | None = typer.Option(None, metavar="DIR", help="Folder for the report and plots (default: RUN_DIR/report "
                                                      "for one run, ./report for several)."),
           plots: bool = typer.Option(True, help="Also write the plots (PNG and SVG)."),
           show: bool = typer.Option(True, help="Print the Markdown report (format md) on stdout.")):
    """Tables of stored runs: the paper's Table 2 by level, best against best, the paper's figures,
    absolute times against the measured ceilings, and the environment. Re-measures nothing."""
    from fffbench.formats import write_report

    runs = load_runs(run_dirs)
    out = out or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("report"))
    try:
        figures = []
        if plots or fmt.value == "html":
            from fffbench.plots import write_plots

            figures = write_plots(runs, out)
        paths = write_report(runs, out, fmt.value, figures)
    except OSError as e:
        fail_os(e, str(out))
    if fmt.value == "md" and show:
        typer.echo(paths[0].read_text())
    _wrote(paths + (figures if plots else []))


@app.command(epilog="Examples:\n\n  fffbench plot results/<run-id>\n\n"
                    "  fffbench plot results/<run-on-cpu> results/<run-on-gpu> --out plots/")
def plot(run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="One or more run directories (drawn on the same figures)."),
         out: Path | None = typer.Option(None, metavar="DIR", help="Folder for the PNG and SVG files "
                                                       "(default: RUN_DIR/report for one run, ./plots for several).")):
    """Figures of stored runs: level-matched and best-against-best speedups beside the paper's figures
    and both limits, time against number of neurons, and speedup against batch size."""
    from fffbench.plots import write_plots

    runs = load_runs(run_dirs)
    out = out or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("plots"))
    try:
        _wrote(write_plots(runs, out))
    except OSError as e:
        fail_os(e, str(out))


@app.command(epilog="Examples:\n\n  fffbench compare results/<before> results/<after>\n\n"
                    "  fffbench compare results/<machine-a> results/<machine-b> --out compare/\n\n"
                    "  fffbench compare results/<main> results/<branch> --fail-on-regression 1.5   # in CI\n\n"
                    "  fffbench compare results/<sharded-run>   # its hosts against each other")
def compare(run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="The base run, then one or more runs to compare with it "
                                                            "(one sharded run of several hosts: its hosts)."),
            out: Path | None = typer.Option(None, metavar="DIR", help="Folder for compare.md and its figure (nothing is written "
                                                          "without it)."),
            threshold: float = typer.Option(1.1, min=1.0, max=100.0, metavar="FACTOR",
                                            help="Ratio beyond which a significant change is called slower or faster."),
            alpha: float = typer.Option(0.05, min=1e-6, max=0.5, metavar="P", help="Significance level of the tests."),
            fail_on_regression: float | None = typer.Option(
                None, "--fail-on-regression", metavar="FACTOR", min=1.0,
                help="Exit 1 when a case became slower by more than FACTOR with significance, or became wrong.")):
    """Match cases across runs (two machines, or before and after a change): times side by side, the
    ratio with its interval, a test with power at a few samples, geometric means, and warnings where
    the environments differ in something that moves timings."""
    from fffbench import compare as C
    from fffbench.render import compare_markdown

    runs = load_runs(run_dirs)
    if len(runs.labels) < 2:  # one sharded run measured on several machines counts as one run per machine
        fail("compare needs at least two run directories: the base run, then the others "
             "(or one sharded run measured on several hosts)")
    table = C.compare_runs(runs, threshold=threshold, alpha=alpha)
    if table.empty:
        fail(f"no case of {runs.labels[0]} appears in {', '.join(runs.labels[1:])}: nothing to compare")
    failed = C.regressions(table, fail_on_regression, alpha) if fail_on_regression is not None else None
    figure = None
    if out is not None:
        from fffbench.plots import plot_compare, save

        try:
            figure = save(plot_compare(table, runs, threshold)[0], out, "compare")
        except OSError as e:
            fail_os(e, str(out))
    text = compare_markdown(runs, table, threshold, alpha, figure[0].name if figure else None, failed,
                            fail_on_regression)
    typer.echo(text)
    if out is not None:
        try:
            (out / "compare.md").write_text(text)
        except OSError as e:
            fail_os(e, str(out))
        _wrote([out / "compare.md"] + figure)
    if failed is not None and len(failed):
        typer.echo(f"regression: {len(failed)} case(s) slower than {fail_on_regression:g}x with significance, "
                   "or now wrong", err=True)
        raise typer.Exit(1)
