"""The ``fffbench`` command: a thin typer layer over the Python API, one module per command group
(as asv's ``commands/``): :mod:`.run` (run), :mod:`.suites` (validate), :mod:`.info` (backends,
info), :mod:`.model` (checkpoint), :mod:`.reports` (report, plot, compare), :mod:`.shards` (shards, merge)."""
from __future__ import annotations

import sys

import typer

from fffbench.cli import info, model, reports, run, shards, suites  # noqa: F401  (each registers its commands)
from fffbench.cli.app import app


def main():  # console-script entry point
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


__all__ = ["app", "main"]
