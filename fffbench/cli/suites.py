"""``fffbench validate``: check suites without running them."""
from __future__ import annotations

from pathlib import Path

import typer

from fffbench.cli.app import app
from fffbench.vocab import plural


@app.command(epilog="Example:\n\n  fffbench validate suites/*.yaml")
def validate(suites: list[Path] = typer.Argument(..., metavar="SUITE", help="Suite YAML files."),
             max_cases: int = typer.Option(100_000, min=1, metavar="N", help="Refuse sweeps with more cases than this.")):
    """Check suites without running them: keys, types, ranges, backend names, comparisons, the size
    of the sweep and each case's memory. Every file is checked, also after one fails."""
    from fffbench.runner import plan
    from fffbench.suite import SuiteError, load_suite

    bad = 0
    for path in suites:
        try:
            s = load_suite(path, max_cases=max_cases)
        except SuiteError as e:
            typer.echo(f"error: {e}", err=True)
            bad += 1
            continue
        typer.echo(f"{path}: ok ({plural(len(s.cases), 'case')}, {plural(len(plan(s)), 'measurement')}, "
                   f"{plural(len(s.comparisons), 'comparison')})")
    if bad:
        raise typer.Exit(2)
