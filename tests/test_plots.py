"""The figures: what each one draws, checked against the stored samples and the report's tables."""
from pathlib import Path

import numpy as np
import pytest
import synthetic
from matplotlib.image import imread
from matplotlib.patches import Rectangle
from typer.testing import CliRunner

import fffbench as fb
from fffbench import plots as P
from fffbench import report as R
from fffbench.cli import app
from fffbench.runs import load
from fffbench.timing.stats import median_ci

MINI = Path(__file__).parent / "data" / "mini"


@pytest.fixture(scope="module")
def mini():
    return load(MINI)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    a = synthetic.make_run(root, "syn-a", n=9)
    b = synthetic.make_run(root, "syn-b", n=9, machine="Second machine (8 cores)", seed=1)
    return load(a), load(a, b)


def bars(ax):
    """(x centre, top) of every bar drawn from 1x (bottom 1, height speedup - 1)."""
    return sorted((p.get_x() + p.get_width() / 2, p.get_y() + p.get_height())
                  for p in ax.patches if isinstance(p, Rectangle) and p.get_y() == 1)


def test_speedup_bars_are_the_table_cells(syn):
    one, _ = syn
    fig, data = P.plot_speedups(one)
    lv, best = R.level_table(one), R.best_table(one)
    # the headline: the largest batch, FFF 1x11, the paper's width for each comparison
    assert set(data.batch) == {16384} and set(data.fff) == {"1x11"}
    for _, d in data.iterrows():
        if d.kind == "level-matched":
            c = lv[(lv.batch == 16384) & (lv.launch == "eager") & (lv.config == "FFF 1x11") & (lv.device == d.device)
                   & (lv.level == d.level) & (lv.baseline_hidden == d.ff_hidden)].iloc[0]
        else:
            c = best[(best.batch == 16384) & (best.launch == "eager") & (best.device == d.device)
                     & (best.ff_hidden == d.ff_hidden)].iloc[0]
        assert d.speedup == c.speedup and d.ci_low == c.ci_low and d.roofline_limit == c.roofline_limit
    assert data.set_index("group").loc["GPU PyTorch BMM\nH=3072", "paper"] == 40
    assert data.set_index("group").loc["CPU Level 3 †\nH=4095", "paper"] == 78
    assert data.set_index("group").loc["CPU Level 2\nH=4095", "paper_secondary"]
    kinds = list(dict.fromkeys(data.kind))
    assert kinds == ["level-matched", "best vs best"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "FF time / FFF time" in ax.get_ylabel()
    tops = [t for _, t in bars(ax)]
    assert np.allclose(sorted(tops), sorted(data.speedup))        # the bars show exactly these numbers
    assert synthetic.MACHINE in ax.get_title()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # below the axes, on the figure
    assert {"neuron-ratio limit", "paper's figure", "paper's figure (secondary)"} <= set(labels)
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    # one star per paper figure, however many bars share its definition's pair
    per_figure = data.dropna(subset=["paper"]).drop_duplicates("figure")
    assert sorted(float(s.get_ydata()[0]) for s in stars) == sorted(per_figure.paper)


def test_several_runs_share_a_figure(syn):
    _, two = syn
    fig, data = P.plot_speedups(two)
    assert set(data.run) == {"syn-a", "syn-b"}
    assert len(bars(fig.axes[0])) == len(data) == 2 * data.group.nunique()
    title = fig.axes[0].get_title()
    assert synthetic.MACHINE in title and "Second machine (8 cores)" in title
    fig, data = P.plot_batch(two)
    assert {(r, d) for r, d in zip(data.run, data.device)} == {(r, d) for r in ("syn-a", "syn-b")
                                                               for d in ("cpu", "cuda")}


def test_scaling_data_from_the_samples(mini):
    fig, data = P.plot_scaling(mini)
    rows = fb.load_run(MINI, samples=True)
    ok = rows[rows.status == "ok"]
    assert len(data) == len(ok)
    for _, d in data.iterrows():
        r = ok[(ok.backend == d.backend) & (ok.batch == d.batch) & (ok.neurons_total == d.neurons)].iloc[0]
        lo, hi = median_ci(r.samples)
        assert d.median_ms == pytest.approx(np.median(r.samples) * 1e3)
        assert (d.ci_low_ms, d.ci_high_ms) == pytest.approx((lo * 1e3, hi * 1e3))
    # FF x values are hidden widths, FFF x values tree sizes (2^(D+1) - 1)
    assert set(data[data.family == "ff"].neurons) == {63, 255, 1023}
    assert set(data[data.family == "fff"].neurons) == {63, 255, 1023}
    assert len(fig.axes) == 2                       # one panel per batch (CPU only here)
    for ax, batch in zip(fig.axes, (16, 256)):
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert f"batch {batch}" in ax.get_title() and "(ms)" in fig.axes[0].get_ylabel()
        drawn = {tuple(np.round(np.asarray(line.get_ydata(), float), 12)) for line in ax.lines
                 if line.get_marker() in ("o", "s")}  # not the error bars' caps
        want = {tuple(np.round(g.sort_values("neurons").median_ms.to_numpy(), 12))
                for _, g in data[data.batch == batch].groupby("backend")}
        assert drawn == want
    assert "neurons" in fig.axes[-1].get_xlabel()


def test_batch_plot_is_best_against_best(mini):
    fig, data = P.plot_batch(mini)
    best = R.best_table(mini)
    assert set(data.ff_hidden) == {1023} and set(data.fff) == {"1x9"}   # the tree's node count is 1023
    for _, d in data.iterrows():
        b = best[(best.batch == d.batch) & (best.ff_hidden == 1023) & (best.fff == "1x9")].iloc[0]
        assert d.speedup == b.speedup and d.roofline_limit == b.roofline_limit
    ax = fig.axes[0]
    line = next(line for line in ax.lines if list(line.get_xdata()) == [16, 256] and line.get_linestyle() == "-")
    assert np.allclose(line.get_ydata(), data.speedup)
    assert ax.get_xscale() == ax.get_yscale() == "log" and "batch size" in ax.get_xlabel()
    assert mini.machine("mini") in ax.get_title()


def test_write_plots_and_the_plot_command(mini, tmp_path):
    paths = P.write_plots(mini, tmp_path / "a")
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in P.PLOTS for e in ("png", "svg"))
    for p in paths:
        if p.suffix == ".png":
            img = imread(p)
            assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
        else:
            assert "<svg" in p.read_text()[:500]
    res = CliRunner().invoke(app, ["plot", str(MINI), str(MINI), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "b").glob("*.png"))) == 3
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1


def test_empty_figures_do_not_crash(tmp_path):
    from fffbench.session import run_suite
    from fffbench.suite import parse_suite

    s = parse_suite("name: e\nsweep: {batch: 4, width: 8, device: cuda, threads: 1}\nfff: {depth: 1}\n"
                    "backends: [fff-bmm]\ntiming: {budget_s: 0.01, warmup_s: 0}\n")
    runs = load(run_suite(s, out_root=tmp_path, ceilings=False).path)
    for fn in P.PLOTS.values():
        fig, data = fn(runs)
        assert data.empty and fig.axes
