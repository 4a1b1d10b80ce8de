"""``fffbench backends`` and ``fffbench info``: what this machine can run, and what a run records."""
from __future__ import annotations

import json

import typer

from fffbench.cli.app import app


@app.command(epilog="Examples:\n\n  fffbench backends\n\n  fffbench backends --json")
def backends(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List every registered backend, its family, paper level, devices, dtypes and availability."""
    from fffbench.registry import list_backends

    df = list_backends()
    if as_json:
        typer.echo(df.to_json(orient="records", indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="fffbench backends", title_justify="left")
    t.add_column("backend", no_wrap=True, min_width=max(len(b) for b in df["backend"]))
    for col in ("family", "level", "device", "dtypes"):
        t.add_column(col, overflow="fold")
    t.add_column("available", overflow="fold", ratio=1)
    for _, r in df.iterrows():
        t.add_row(r["backend"], r["family"], r["level"], r["device"], r["dtypes"].replace(",", ", "),
                  "yes" if r["available"] else f"no: {r['reason']}")
    Console().print(t)


@app.command(epilog="Example:\n\n  fffbench info > machine.json")
def info():
    """Print the environment record a run would store (CPU, BLAS, GPU, versions, git)."""
    from fffbench.env import collect

    typer.echo(json.dumps(collect(), indent=2, default=str))
