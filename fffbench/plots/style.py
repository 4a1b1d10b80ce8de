"""One look for every figure: colours, and one line style per meaning."""
from __future__ import annotations

import math

from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
#: the same meaning is drawn the same way in every figure
STYLE = {
    "neuron": {"color": "k", "linestyle": "--", "linewidth": 1.2},          # neuron-ratio limit
    "roofline": {"color": "0.35", "linestyle": ":", "linewidth": 2.0},      # roofline limit
    "unity": {"color": "0.3", "linestyle": "-", "linewidth": 0.8},          # 1x: no speedup
    "paper": {"marker": "*", "markersize": 14, "markeredgecolor": "k", "linestyle": "none"},
    "uniform": {"color": "0.45", "linestyle": "-.", "linewidth": 1.2},   # uniform (random) routing
}
RUN_STYLES = ["-", (0, (5, 2)), (0, (1, 1.5)), "-."]  # line style per run where runs share axes
#: figures stay within 1600 px at 150 dpi
MAX_WIDTH_IN = 10.6


def width(inches: float) -> float:
    return min(inches, MAX_WIDTH_IN)


def int_ticks(axis, values, most: int = 8, spread: float = 1.15) -> None:
    """Plain integer labels on a log axis: at the data's values when there are few (dropping a
    label within ``spread`` of the previous one, so 4095 and 4096 do not print over each other),
    else powers of ten."""
    values = sorted({int(v) for v in values})
    axis.set_minor_formatter(NullFormatter())
    if len(values) <= most:
        shown, last = [], None
        for v in values:
            if last is None or v / last >= spread:
                shown.append(v)
                last = v
        axis.set_ticks(shown, [str(v) for v in shown])
        axis.set_minor_locator(NullLocator())
    else:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def empty(fig, ax, why: str):
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def title(runs, data=None) -> str:
    labels = data["run"].unique() if data is not None and len(data) else runs.labels
    return "; ".join(dict.fromkeys(runs.machine(r) for r in labels))


def yerr(d):
    import numpy as np

    lo = (d["speedup"] - d["ci_low"]).fillna(0).clip(lower=0)
    hi = (d["ci_high"] - d["speedup"]).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(), hi.to_numpy()])


def closest(hiddens, neurons: int) -> int:
    return min(hiddens, key=lambda h: (abs(math.log(h / neurons)), h))
