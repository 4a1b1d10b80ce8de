"""CLI commands that read stored runs (report, plot, compare); registered on the main app.

Nothing here measures: each command loads run directories, computes tables with
:mod:`fffbench.report` / :mod:`fffbench.compare`, and writes files. Bad input is one line
``error: ...`` and exit code 2; ``compare --fail-on-regression`` exits 1 on a regression.
"""
from __future__ import annotations

import math
from pathlib import Path

import typer

from fffbench.cli import _fail, app


def _load(dirs):
    """Runs of ``dirs``, or a one-line error (exit 2) naming what is wrong with a directory."""
    import json

    from fffbench.report import load

    for d in dirs:
        if not Path(d).is_dir():
            _fail(f"{d}: no such run directory")
    try:
        return load(*dirs)
    except FileNotFoundError as e:
        _fail(str(e))
    except (json.JSONDecodeError, KeyError, ValueError) as e:
        _fail(f"cannot read the runs {', '.join(map(str, dirs))}: {type(e).__name__}: {e}")


def _number(name: str, text: str, minimum: float, strict: bool = True) -> float:
    try:
        v = float(text)
    except ValueError:
        _fail(f"{name} must be a number, got {text!r}")
    if math.isnan(v) or v < minimum or (strict and v == minimum):
        _fail(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {text}")
    return v


def _wrote(paths) -> None:
    for p in paths:
        typer.echo(f"wrote {p}", err=True)


@app.command(epilog="Examples:\n\n  fffbench report results/paper-20261128-101500-myhost\n\n"
                    "  fffbench report results/paper-20261128-101500-myhost --format latex --out paper/\n\n"
                    "  fffbench report results/<run-id> --format csv --no-plots")
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `fffbench run`."),
           fmt: str = typer.Option("md", "--format", help="md (Markdown), csv (one file per table) or latex."),
           out: Path | None = typer.Option(None, help="Folder for the report and plots (default: RUN_DIR/report)."),
           plots: bool = typer.Option(True, help="Also write the plots (PNG and SVG)."),
           show: bool = typer.Option(True, help="Print the Markdown report (format md) on stdout.")):
    """Tables of a stored run: the paper's Table 2 by level, best against best, the paper's figures,
    absolute times against the measured ceilings, and the environment. Re-measures nothing."""
    from fffbench.render import FORMATS, write_report

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    runs = _load([run_dir])
    out = out or run_dir / "report"
    figures = []
    if plots:
        from fffbench.plots import write_plots

        figures = write_plots(runs, out)
    paths = write_report(runs, out, fmt, figures)
    if fmt == "md" and show:
        typer.echo(paths[0].read_text())
    _wrote(paths + figures)


@app.command(epilog="Examples:\n\n  fffbench plot results/<run-id>\n\n"
                    "  fffbench plot results/<run-on-cpu> results/<run-on-gpu> --out plots/")
def plot(run_dirs: list[Path] = typer.Argument(..., help="One or more run directories (drawn on the same figures)."),
         out: Path | None = typer.Option(None, help="Folder for the PNG and SVG files "
                                                       "(default: RUN_DIR/report for one run, ./plots for several)."),
         ):
    """Figures of stored runs: level-matched and best-against-best speedups beside the paper's figures
    and both limits, time against number of neurons, and speedup against batch size."""
    from fffbench.plots import write_plots

    runs = _load(run_dirs)
    out = out or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("plots"))
    _wrote(write_plots(runs, out))


@app.command(epilog="Examples:\n\n  fffbench compare results/<before> results/<after>\n\n"
                    "  fffbench compare results/<machine-a> results/<machine-b> --out compare/\n\n"
                    "  fffbench compare results/<main> results/<branch> --fail-on-regression 1.5   # in CI\n\n"
                    "  fffbench compare results/<sharded-run>   # its hosts against each other")
def compare(run_dirs: list[Path] = typer.Argument(..., help="The base run, then one or more runs to compare with it "
                                                            "(one sharded run of several hosts: its hosts)."),
            out: Path | None = typer.Option(None, help="Folder for compare.md and the plot "
                                                          "(default: ./compare-BASE-vs-OTHER)."),
            threshold: str = typer.Option("1.1", help="Ratio beyond which a significant change is called slower "
                                                      "or faster."),
            alpha: str = typer.Option("0.05", help="Significance level of the Mann-Whitney U tests."),
            fail_on_regression: str | None = typer.Option(
                None, "--fail-on-regression", metavar="FACTOR",
                help="Exit 1 when a case became slower by more than FACTOR with significance, or became wrong.")):
    """Match cases across runs (two machines, or before and after a change): times side by side, the
    ratio with its interval, a Mann-Whitney U test on the raw samples, geometric means, and warnings
    where the environments differ in something that moves timings."""
    from fffbench import compare as C
    from fffbench.plots import save

    thr = _number("--threshold", threshold, 1.0)
    a = _number("--alpha", alpha, 0.0)
    if a >= 1:
        _fail(f"--alpha must be below 1, got {alpha}")
    factor = _number("--fail-on-regression", fail_on_regression, 1.0) if fail_on_regression is not None else None
    runs = _load(run_dirs)
    if len(runs.labels) < 2:  # one sharded run measured on several machines counts as one run per machine
        _fail("compare needs at least two run directories: the base run, then the others "
              "(or one sharded run measured on several hosts)")
    table = C.compare_runs(runs, threshold=thr, alpha=a)
    if table.empty:
        _fail(f"no case of {runs.labels[0]} appears in {', '.join(runs.labels[1:])}: nothing to compare")
    failed = C.regressions(runs, table, factor, a) if factor is not None else None
    out = out or Path(f"compare-{runs.labels[0]}-vs-{'-'.join(runs.labels[1:])}")
    figure = save(C.plot_compare(table, runs, thr)[0], out, "compare")
    text = C.to_markdown(runs, table, thr, a, figure[0].name, failed, factor)
    (out / "compare.md").write_text(text)
    typer.echo(text)
    _wrote([out / "compare.md"] + figure)
    if failed is not None and len(failed):
        typer.echo(f"regression: {len(failed)} case(s) slower than {factor:g}x with significance, or now wrong",
                   err=True)
        raise typer.Exit(1)
