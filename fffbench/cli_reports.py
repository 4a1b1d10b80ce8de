"""CLI commands that read stored runs (report, plot, compare); registered on the main app."""
from __future__ import annotations

from fffbench.cli import app  # noqa: F401  (commands are added with @app.command)
