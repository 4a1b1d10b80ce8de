"""Figures from stored runs: the 78x/40x speedup comparison (:mod:`.speedups`), cost growth against
the number of neurons and speedup against batch size (:mod:`.scaling`), ``compare``'s ratios
(:mod:`.compare`), and the routing of a model's layers (:mod:`.routing`).

Each figure has a ``*_data`` function (a DataFrame of exactly what is drawn, computed from
:mod:`fffbench.report`) and a ``plot_*`` function returning ``(Figure, data)``, so tests check the
plotted numbers against the stored samples. Figures are made without pyplot (Agg canvas), so this
works headless and in notebooks alike. One line style per meaning in every figure (:data:`STYLE`);
titles name the machines; several runs share a figure as grouped bars or facets, at most
:data:`MAX_WIDTH_IN` inches (1600 px at 150 dpi) wide. The same data give the same files, byte for
byte (no dates in the metadata, a fixed SVG id salt).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

from fffbench.plots.compare import plot_compare
from fffbench.plots.routing import plot_routing, routing_data
from fffbench.plots.scaling import batch_data, plot_batch, plot_scaling, scaling_data
from fffbench.plots.speedups import headline, plot_speedups, speedup_data
from fffbench.plots.style import MAX_WIDTH_IN, STYLE

DPI = 150
matplotlib.rcParams["svg.hashsalt"] = "fffbench"
#: every figure of a report, by file stem
PLOTS = {"speedups": plot_speedups, "scaling": plot_scaling, "batch": plot_batch}
#: figures of runs with a model's layers (routing records), written only for those
MODEL_PLOTS = {"routing": plot_routing}


def save(fig, out, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` under ``out``, deterministically (no dates, fixed ids)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": "fffbench"}):
        fig.savefig(paths[0], dpi=DPI, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths


def write_plots(runs, out) -> list[Path]:
    """Every figure of ``runs`` as PNG and SVG under ``out``; returns the files written."""
    from fffbench import report as R

    levels, best = R.level_table(runs), R.best_table(runs)
    figs = {"speedups": plot_speedups(runs, speedup_data(runs, levels, best))[0],
            "scaling": plot_scaling(runs)[0], "batch": plot_batch(runs, batch_data(runs, best))[0]}
    if runs.routing:  # the real model's layers: where their rows go
        figs["routing"] = plot_routing(runs)[0]
    return [p for stem, fig in figs.items() for p in save(fig, out, stem)]


__all__ = ["MAX_WIDTH_IN", "MODEL_PLOTS", "PLOTS", "STYLE", "batch_data", "headline", "plot_batch", "plot_compare", "plot_scaling",
           "plot_routing", "plot_speedups", "routing_data", "save", "scaling_data", "speedup_data", "write_plots"]
