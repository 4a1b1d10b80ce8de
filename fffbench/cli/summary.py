"""The end of every run, inline or sharded: the summary tables, the counts, the failures, what to
run next; and the suite a run is started (or resumed) with, checked against the device filter."""
from __future__ import annotations

import typer

from fffbench.cli.app import fail


def load_checked(suite, resume, devices, max_cases):
    """The suite to run (a resumed run's own copy), refusing a device filter that leaves nothing."""
    from fffbench.store import SUITE_COPY
    from fffbench.suite import SuiteError, load_suite

    try:
        s = load_suite(suite if suite is not None else resume / SUITE_COPY, max_cases=max_cases)
    except SuiteError as e:
        fail(str(e))
    if devices and not any(c.device in devices for c in s.cases):
        fail(f"{s.path} has no case on {', '.join(devices)} (its cases run on "
             f"{', '.join(sorted({c.device for c in s.cases}))})")
    return s



def conclude(store, suite, summary: bool, df=None, extra_failed: list[str] = ()) -> None:
    """The end of every run: the summary tables, the counts, the failures, what to run next."""
    from fffbench.console import print_summary
    from fffbench.vocab import plural

    df = store.frame(samples=True) if df is None else df
    if summary and len(df):
        print_summary(df, suite.comparisons, store.env().get("machine", "?"))
    counts = ", ".join(f"{n} {k}" for k, n in df["status"].value_counts().items()) if len(df) else "no rows"
    typer.echo(f"results: {store.path} ({plural(len(df), 'row')}: {counts})")
    problems = store.problems()
    for p in problems[:10]:
        typer.echo(f"  unreadable: {p}", err=True)
    if len(problems) > 10:
        typer.echo(f"  ... and {len(problems) - 10} more unreadable lines", err=True)
    failed = df[df["status"].isin(["wrong", "error"])] if len(df) else df
    for _, r in failed.iterrows():
        typer.echo(f"  {r['status']}: {r['backend']} on {r['case_id']}: {r['reason']}", err=True)
    for line in extra_failed:
        typer.echo(line, err=True)
    typer.echo(f"next: fffbench report {store.path}")
    if len(failed) or extra_failed:
        raise typer.Exit(1)
