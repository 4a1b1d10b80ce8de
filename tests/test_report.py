"""The report's tables against numbers recomputed here from the stored rows and samples.

Two runs: ``tests/data/mini`` (a real, tiny CPU run; CUDA rows skipped) and a synthetic run in the
paper's setting written through the store (tests/synthetic.py), which has every level on both
devices, a wrong row, a CUDA-graph regime and ceilings for both devices.
"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic
from typer.testing import CliRunner

import fffbench as fb
from fffbench import formats, paper, render
from fffbench import report as R
from fffbench import rowtables as T
from fffbench.cli import app
from fffbench.runs import load

DATA = Path(__file__).parent / "data"
MINI = DATA / "mini"


@pytest.fixture(scope="module")
def mini():
    return load(MINI)


@pytest.fixture(scope="module")
def mini_rows():
    """The stored rows, read independently of fffbench.report."""
    df = fb.load_run(MINI, samples=True)
    return df[df.status == "ok"]


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    return synthetic.make_run(tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def syn(syn_dir):
    return load(syn_dir)


def med_ratio(a, b):
    return float(np.median(a) / np.median(b))


def stored(rows, **kw):
    sel = rows
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    return sel


def fastest(rows):
    return rows.loc[rows.median_s.idxmin()]


# --- Table 2 on the real run ---------------------------------------------------------------------------

def test_level_table_cells_are_ratios_of_stored_medians(mini, mini_rows):
    lv = R.level_table(mini)
    env = json.loads((MINI / "run.json").read_text())
    gemm, bw = env["ceilings"]["cpu"]["gemm_gflops"]["float32"] * 1e9, env["ceilings"]["cpu"]["copy_gbps"] * 1e9
    checked = 0
    for _, c in lv[lv.config_family == "fff"].iterrows():
        ff = stored(mini_rows, family="ff", hidden=c.baseline_hidden, batch=c.batch, device=c.device)
        fff = stored(mini_rows, family="fff", depth=c.depth, trees=c.trees, batch=c.batch, device=c.device)
        ff_at, fff_at = ff[ff.level == c.level], fff[fff.level == c.level]
        num = fastest(ff_at) if len(ff_at) else fastest(ff)      # ff-dense / ff-bmm, or the fastest FF
        den = fastest(fff_at) if len(fff_at) else fastest(fff)
        assert (c.ff_backend, c.fff_backend) == (num.backend, den.backend)
        assert c.speedup == pytest.approx(med_ratio(num.samples, den.samples), rel=1e-12)
        assert c.ci_low <= c.speedup <= c.ci_high
        assert c.vs == ("best FFF" if not len(fff_at) else "best FF" if not len(ff_at) else "")
        assert c.neuron_limit == pytest.approx(c.baseline_hidden / (c.depth + 1))
        fff_floor = fff.bytes.iloc[0] / bw
        roof = max(ff.flops.iloc[0] / gemm, ff.bytes.iloc[0] / bw) / fff_floor
        if fff[fff.status == "ok"].median_s.min() < fff_floor:  # data in cache: the floor bounds nothing
            assert math.isnan(c.roofline_limit)
        else:
            assert c.roofline_limit == pytest.approx(roof, rel=1e-12)
        checked += 1
    assert checked == 2 * 3 * 3 * 3  # batches x baselines x trees x columns


def test_level_table_layout(mini):
    lv = R.level_table(mini)
    # columns: only what was timed (CUDA rows are skipped here), in the paper's order
    assert list(dict.fromkeys(lv.column)) == ["CPU Level 3", "CPU PyTorch BMM", "CPU optimized"]
    base = lv[(lv.config == "FF H=255") & (lv.baseline_hidden == 255) & (lv.level == "cpu-l3")]
    assert (base.speedup == 1.0).all()                      # the baseline against itself: exactly 1
    other = lv[(lv.config == "FF H=1023") & (lv.baseline_hidden == 255) & (lv.level == "pytorch-bmm")]
    assert (other.speedup < 1).all()                        # a 4x wider dense layer is slower
    assert lv.paper.isna().all()                            # not the paper's setting: no figure beside
    ff_opt = lv[(lv.config_family == "ff") & (lv.level == "optimized")]
    assert ff_opt.speedup.isna().all() and (ff_opt.note == "not run at this level").all()


def test_best_table_and_geomean(mini, mini_rows):
    best = R.best_table(mini)
    assert set(best.device) == {"cpu"} and len(best) == 2 * 3 * 3
    for _, b in best.iterrows():
        num = fastest(stored(mini_rows, family="ff", hidden=b.ff_hidden, batch=b.batch))
        den = fastest(stored(mini_rows, family="fff", depth=b.depth, trees=b.trees, batch=b.batch))
        assert (b.ff_backend, b.fff_backend) == (num.backend, den.backend)
        assert b.speedup == pytest.approx(med_ratio(num.samples, den.samples), rel=1e-12)
        assert b.ff_ms == pytest.approx(num.median_s * 1e3)
    g = R.geomean_summary(best).iloc[0]
    assert g.n == len(best)
    assert g.geomean == pytest.approx(math.exp(np.log(best.speedup).mean()))
    assert g["min"] == best.speedup.min() and g["max"] == best.speedup.max()


def test_absolute_table_against_ceilings(mini, mini_rows):
    t = T.absolute_table(mini)
    env = json.loads((MINI / "run.json").read_text())
    bw, gemm = env["ceilings"]["cpu"]["copy_gbps"], env["ceilings"]["cpu"]["gemm_gflops"]["float32"]
    assert len(t) == len(mini_rows)
    for (_, r), (_, s) in zip(t.iterrows(), mini_rows.iterrows()):
        assert r.backend == s.backend and r.median_ms == pytest.approx(np.median(s.samples) * 1e3)
        assert r.gbps == pytest.approx(s.bytes / np.median(s.samples) / 1e9)
        assert r.bw_frac == pytest.approx(r.gbps / bw)
        assert r.gemm_frac == pytest.approx(s.flops / np.median(s.samples) / 1e9 / gemm)
        floor = max(s.flops / (gemm * 1e9), s.bytes / (bw * 1e9))
        assert r.floor_ms == pytest.approx(floor * 1e3) and r.x_floor == pytest.approx(s.median_s / floor)
    un = T.untimed_table(mini)
    assert set(un.device) == {"cuda"} and set(un.status) == {"skipped"} and un.rows.sum() == 24


# --- the paper's figures, regimes, missing ceilings (synthetic run) ------------------------------------------

def cell(lv, **kw):
    sel = lv
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, kw
    return sel.iloc[0]


def test_paper_figures_sit_in_their_definition_cells_only(syn):
    rows = fb.load_run(syn.paths["synthetic"], samples=True)
    lv = R.level_table(syn)
    eager = lv[lv.launch == "eager"]
    fff, big = "FFF 1x11", 16384

    def s(backend, device, **kw):
        return stored(rows, backend=backend, device=device, batch=big, regime=kw.pop(
            "regime", "wall/warm" if device == "cpu" else "cuda-events/warm-l2/eager"), **kw).iloc[0].samples

    c = cell(eager, batch=big, baseline_hidden=4095, config=fff, level="cpu-l3")  # ff-c-l3 vs the fastest FFF
    assert c.paper == 78 and not c.paper_secondary and c.vs == "best FFF" and c.fff_backend == "fff-c-l1"
    assert c.ff_backend == "ff-c-l3"
    assert c.speedup == pytest.approx(med_ratio(s("ff-c-l3", "cpu", hidden=4095), s("fff-c-l1", "cpu")))
    c = cell(eager, batch=big, baseline_hidden=3072, config=fff, device="cuda", level="pytorch-bmm")
    assert c.paper == 40 and c.speedup == pytest.approx(med_ratio(s("ff-bmm", "cuda", hidden=3072),
                                                                  s("fff-bmm", "cuda")))
    assert cell(eager, batch=big, baseline_hidden=4095, config=fff, level="cpu-l2")[["paper", "paper_secondary"]].tolist() \
        == [255, True]
    assert cell(eager, batch=big, baseline_hidden=3072, config=fff, level="naive-cuda").paper_secondary
    # nowhere else: other batch, other baseline, FF rows, the graph regime; and 3.15x (dense vs the
    # paper's BMM FFF) in no Table 2 cell, since the GPU native column sets the fastest FFF against it
    figured = lv.dropna(subset=["paper"])
    assert len(figured) == 4 and (figured.batch == big).all() and (figured.launch == "eager").all()
    assert 3.15 not in set(figured.paper)


def test_each_paper_figure_stands_beside_exactly_one_measured_value(syn):
    """Every table that sets a paper figure beside a measurement sets it beside the same one."""
    values = figure_values_everywhere(syn)
    assert {"cpu-78x", "gpu-bmm-40x", "cpu-l2-255x", "naive-cuda-118x", "native-vs-bmm-3.15x"} <= set(values)
    for fig, seen in values.items():
        assert len({round(v, 12) for v in seen}) == 1, (fig, seen)


def figure_values_everywhere(runs) -> dict:
    """figure key -> every measured value set beside it, over Table 2, best against best, the
    paper table and the suite comparisons."""
    out = {}
    tables = [(R.level_table(runs), "speedup"), (R.best_table(runs), "speedup"),
              (R.comparison_table(runs), "speedup")]
    for t, col in tables:
        if len(t) and "figure" in t:
            for fig, v in zip(t["figure"], t[col]):
                if isinstance(fig, str) and v == v:
                    out.setdefault(fig, []).append(v)
    p = R.figure_values(runs)
    for fig, v, kind in zip(p["figure"], p["measured"], p["figure"].map(lambda k: paper.BY_KEY[k].kind)):
        if kind == "speedup" and v == v:
            out.setdefault(fig, []).append(v)
    return out


def test_regimes_are_not_mixed(syn):
    """CUDA-graph times (much faster here) stay in their own table; the default one is eager."""
    lv = R.level_table(syn)
    eager = cell(lv, batch=16384, baseline_hidden=4095, config="FFF 1x11", level="gpu-native", launch="eager")
    graph = cell(lv, batch=16384, baseline_hidden=4095, config="FFF 1x11", level="gpu-native", launch="graph")
    rows = fb.load_run(syn.paths["synthetic"], samples=True)

    def pick(backend, regime):
        sel = stored(rows, backend=backend, device="cuda", batch=16384, regime=regime)
        return (sel[sel.hidden == 4095] if backend.startswith("ff-") else sel).iloc[0].samples
    assert eager.speedup == pytest.approx(med_ratio(pick("ff-dense", "cuda-events/warm-l2/eager"),
                                                    pick("fff-cuda", "cuda-events/warm-l2/eager")))
    assert graph.speedup == pytest.approx(med_ratio(pick("ff-dense", "cuda-events/warm-l2/graph"),
                                                    pick("fff-cuda", "cuda-events/warm-l2/graph")))
    assert set(lv[lv.launch == "graph"].device) == {"cuda"}


def test_wrong_rows_are_never_fastest(syn):
    best = R.best_table(syn)
    assert "syn-fff-bad" not in set(best.fff_backend)
    assert set(best[best.device == "cpu"].fff_backend) == {"fff-c-l1"}
    assert "syn-fff-bad" in set(T.untimed_table(syn).backend)


def test_paper_table(syn):
    p = R.figure_values(syn).set_index("figure")
    rows = fb.load_run(syn.paths["synthetic"], samples=True)
    cuda = stored(rows, device="cuda", batch=16384, regime="cuda-events/warm-l2/eager")
    want = med_ratio(stored(cuda, backend="ff-dense", hidden=3072).iloc[0].samples,
                     stored(cuda, backend="fff-bmm").iloc[0].samples)
    assert p.loc["native-vs-bmm-3.15x", "measured"] == pytest.approx(want)
    assert p.loc["native-vs-bmm-3.15x", "secondary"] and p.loc["cpu-l2-255x", "secondary"]
    assert not p.loc["cpu-78x", "secondary"] and not p.loc["gpu-bmm-40x", "secondary"]
    assert p.loc["limit-341x", "measured"] == pytest.approx(4095 / 12)
    lv = R.level_table(syn)
    c = cell(lv, batch=16384, baseline_hidden=4095, config="FFF 1x11", level="cpu-l3", launch="eager")
    assert p.loc["cpu-78x", "measured"] == pytest.approx(c.speedup)
    assert (p.loc["cpu-78x", "ff_backend"], p.loc["cpu-78x", "fff_backend"]) == ("ff-c-l3", "fff-c-l1")
    # the figures live in one place, each with a source and one definition
    assert {f.value for f in paper.FIGURES} == {78, 40, 341, 255, 118, 3.15}
    assert all(f.source for f in paper.FIGURES)
    assert {f.key for f in paper.FIGURES if f.secondary} == {"cpu-l2-255x", "naive-cuda-118x", "native-vs-bmm-3.15x"}
    assert paper.BY_KEY["naive-cuda-118x"].hidden == 3072


def test_paper_table_on_a_run_without_the_setting(mini):
    p = R.figure_values(mini)
    assert p.measured.isna().all() and p.note.str.startswith("not in this run").all()


def test_missing_ceilings_leave_blanks(tmp_path):
    path = synthetic.make_run(tmp_path, batches=(16384,), n=5)
    synthetic.drop_ceilings(path)
    runs = load(path)
    lv, t = R.level_table(runs), T.absolute_table(runs)
    assert lv.roofline_limit.isna().all() and lv.speedup.notna().any()
    assert t.bw_frac.isna().all() and t.floor_ms.isna().all() and t.gbps.notna().all()
    text = formats.to_markdown(runs, render.sections(runs))
    assert "roofline limit CPU |" in text and "nan" not in text.lower()


# --- rendering: what is printed is what was computed ---------------------------------------------------

def test_markdown_csv_latex_show_the_computed_numbers(mini, syn, tmp_path):
    lv = R.level_table(mini)
    c = cell(lv, batch=256, baseline_hidden=1023, config="FFF 1x9", level="pytorch-bmm")
    md = formats.write_report(mini, tmp_path / "md", "md")[0].read_text()
    assert render.fmt_x(c.speedup, c.ci_low, c.ci_high) in md
    assert "Intel" in md or mini.machine("mini") in md             # environment footnote
    assert "openblas" in md.lower() and "GB/s" in md
    csv = pd.read_csv(tmp_path / "csv" / "table2.csv") if formats.write_report(mini, tmp_path / "csv", "csv") else None
    got = csv[(csv.batch == 256) & (csv.baseline_hidden == 1023) & (csv.config == "FFF 1x9")
              & (csv.level == "pytorch-bmm")].speedup.iloc[0]
    assert got == pytest.approx(c.speedup)
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"table2.csv", "best.csv", "paper.csv", "times.csv",
                                                              "environment.csv", "best_geomean.csv"}
    tex = formats.write_report(mini, tmp_path / "tex", "latex")[0].read_text()
    assert tex.startswith(r"\documentclass") and render.fmt_x(c.speedup, c.ci_low, c.ci_high) in tex
    smd = formats.to_markdown(syn, render.sections(syn))
    assert "paper 78x" in smd and "paper 255x (*secondary*)" in smd and "3.15x (*secondary*)" in smd
    stex = formats.to_latex(syn, render.sections(syn))
    assert r"\emph{secondary}" in stex and r"$^\dagger$" in stex


def test_report_command(tmp_path):
    res = CliRunner().invoke(app, ["report", str(MINI), "--out", str(tmp_path), "--no-show"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"report.md"} | {f"{s}.{e}" for s in ("speedups", "scaling", "batch") for e in ("png", "svg")}
    assert "![speedups](speedups.png)" in (tmp_path / "report.md").read_text()
    res = CliRunner().invoke(app, ["report", str(MINI), "--out", str(tmp_path / "c"), "--format", "csv", "--no-plots"])
    assert res.exit_code == 0 and (tmp_path / "c" / "table2.csv").exists()


@pytest.mark.parametrize("args,msg", [(["report", "nope"], "no such run directory"),
                                      (["report", str(DATA)], "is not a run directory"),
                                      (["report", str(MINI), "--format", "xml"], "'xml' is not one of")])
def test_report_errors_are_one_line(args, msg):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ") and msg in res.output


def test_notebook_runs_against_the_committed_run(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    src = Path(__file__).parent.parent / "notebooks" / "analysis.ipynb"
    nb = nbformat.read(src, as_version=4)
    shutil.copytree(MINI, tmp_path / "mini")
    monkeypatch.setenv("FFFBENCH_RUNS", str(tmp_path / "mini"))
    monkeypatch.setenv("FFFBENCH_OUT", str(tmp_path / "out"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.output_type == "error"]
    outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outs)
    assert "Table 2" in outputs and sum("image/png" in o.get("data", {}) for o in outs) >= 3
    c = cell(R.level_table(load(MINI)), batch=256, baseline_hidden=1023, config="FFF 1x9", level="pytorch-bmm")
    assert f"{c.speedup:.3g}x" in outputs                       # the notebook shows the same numbers
    assert (tmp_path / "out" / "speedups.png").exists()


def test_runs_with_nothing_timed(tmp_path):
    """An interrupted run with no rows, and a run whose rows were all skipped (no GPU here)."""
    empty, skipped = tmp_path / "empty", tmp_path / "skipped"
    for d in (empty, skipped):
        d.mkdir()
        for f in ("run.json", "suite.yaml"):
            shutil.copy(MINI / f, d / f)
    (empty / "results.jsonl").write_text("")
    lines = (MINI / "results.jsonl").read_text().splitlines(keepends=True)
    (skipped / "results.jsonl").write_text("".join(x for x in lines if '"device":"cuda"' in x))
    for d in (empty, skipped):
        res = CliRunner().invoke(app, ["report", str(d), "--out", str(d / "report"), "--no-show"])
        assert res.exit_code == 0, res.output
        assert (d / "report" / "report.md").exists() and (d / "report" / "speedups.png").exists()
    assert "Rows not timed" in (skipped / "report" / "report.md").read_text()
    res = CliRunner().invoke(app, ["compare", str(skipped), str(skipped), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0 and "not timed" in res.output


def test_committed_runs_report_the_same_numbers_as_before_the_redesign():
    """Table 2, best against best and the absolute times of every committed run, against the values
    the reports printed before the redesign (tests/data/snapshot). Only what the redesign was meant
    to change may differ: which cell carries a paper figure."""
    keep = {"levels": ["speedup", "ci_low", "ci_high", "ff_ms", "fff_ms", "neuron_limit"],
            "best": ["speedup", "ci_low", "ci_high", "ff_ms", "fff_ms"],
            "absolute": ["median_ms", "ci_low_ms", "ci_high_ms", "gbps", "gflops", "floor_ms", "x_floor"]}
    runs_dir = Path(__file__).parent.parent / "results"
    snap = DATA / "snapshot"
    checked = 0
    for path in sorted(snap.glob("*.levels.csv")):
        name = path.name.split(".")[0]
        if not (runs_dir / name).exists():
            continue
        runs = load(runs_dir / name)
        now = {"levels": R.level_table(runs), "best": R.best_table(runs), "absolute": T.absolute_table(runs)}
        for table, cols in keep.items():
            before = pd.read_csv(snap / f"{name}.{table}.csv")
            assert len(before) == len(now[table]), (name, table)
            for col in cols:
                np.testing.assert_allclose(now[table][col].to_numpy(float), before[col].to_numpy(float),
                                           rtol=1e-9, equal_nan=True, err_msg=f"{name} {table} {col}")
            if "roofline_limit" in before:  # since redefined: the dense floor counts its bytes too, so
                # a limit only grows, or is withdrawn where the FFF beat its memory floor (data in cache)
                new, old = now[table]["roofline_limit"].to_numpy(float), before["roofline_limit"].to_numpy(float)
                kept = ~np.isnan(new) & ~np.isnan(old)
                assert (new[kept] >= old[kept] * (1 - 1e-9)).all(), (name, table)
            checked += 1
    assert checked >= 8 * 3


def test_html_report_is_one_self_contained_page(mini, tmp_path):
    res = CliRunner().invoke(app, ["report", str(MINI), "--format", "html", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3 and "<table" in page
    assert "src=" not in page and "href=" not in page.replace('href="#', "")   # nothing to fetch
    import html

    for s in render.sections(mini):
        assert html.escape(s.title) in page


def test_the_roofline_limit_counts_the_dense_weights_at_a_small_batch():
    from fffbench import casedata
    from fffbench.roofline import roofline_limit
    from fffbench.suite import parse_suite

    suite = parse_suite("name: r\nsweep: {batch: [1, 16384], width: 768, threads: 1}\nff: {hidden: 4095}\n"
                        "fff: {depth: 11}\nbackends: [ff-dense, fff-c-opt]\n")
    work = {(c.batch, c.family): casedata.work_of(c, 4) for c in suite.cases}
    gemm, bw = 1e12, 20e9
    for b in (1, 16384):
        (ff_flops, ff_bytes), (_, fff_bytes) = work[(b, "ff")], work[(b, "fff")]
        flops_only = roofline_limit(ff_flops, fff_bytes, gemm, bw)
        limit = roofline_limit(ff_flops, fff_bytes, gemm, bw, ff_bytes)
        assert limit >= flops_only
        if b == 1:  # dense at B = 1 reads every weight: memory-bound, the limit is the bytes' ratio
            assert limit == pytest.approx(ff_bytes / fff_bytes) and limit > 10 * flops_only
        else:       # compute-bound at a large batch: the FLOP floor decides, as before
            assert limit == pytest.approx(flops_only)
        # an FFF faster than its own memory floor had its data in cache: the floor bounds nothing
        floor = fff_bytes / bw
        assert math.isnan(roofline_limit(ff_flops, fff_bytes, gemm, bw, ff_bytes, 0.5 * floor))
        assert roofline_limit(ff_flops, fff_bytes, gemm, bw, ff_bytes, 2 * floor) == pytest.approx(limit)


def test_a_bias_free_ff_is_the_baseline_of_a_biased_fff_only_when_no_ff_has_its_bias():
    from types import SimpleNamespace

    from fffbench.runs import comparison_pairs

    def row(backend, family, bias, **shape):
        return {"backend": backend, "family": family, "bias": bias, "width": 768, "out_width": None,
                "status": "ok", "median_s": 1.0, **shape}

    comp = SimpleNamespace(hidden=None, numerator="ff-dense", denominator="fff-cuda")
    fff = row("fff-cuda", "fff", True, depth=11, trees=1)
    model = [row("ff-dense", "ff", False, hidden=3072), fff]  # crammed BERT's FF against UltraFastBERT's FFF
    [(num, den, h, depth, trees)] = comparison_pairs(comp, model)
    assert (num["backend"], den["backend"], h, depth, trees) == ("ff-dense", "fff-cuda", 3072, 11, 1)
    both = [row("ff-dense", "ff", False, hidden=3072), row("ff-dense", "ff", True, hidden=3072), fff,
            row("fff-cuda", "fff", False, depth=11, trees=1)]
    pairs = comparison_pairs(comp, both)
    assert len(pairs) == 2 and all(num["bias"] == den["bias"] for num, den, *_ in pairs)


def test_batch_figure_draws_every_line_its_legend_names_even_at_one_batch_size():
    """A run of one batch size still draws its roofline limit (a segment, not one invisible point)."""
    from fffbench.plots import plot_batch
    from fffbench.plots.scaling import batch_data

    runs = load(MINI)
    data = batch_data(runs)
    one = data[data["batch"] == data["batch"].max()]
    if one["roofline_limit"].isna().all():
        one = one.assign(roofline_limit=2.0 * one["speedup"])
    fig, _ = plot_batch(runs, one)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(n.startswith("roofline") for n in names)
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert dotted and all(len(ln.get_xdata()) >= 2 for ln in dotted)
