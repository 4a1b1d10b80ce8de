"""fffbench compare: matching, ratios and U tests from the raw samples, environment warnings, and
--fail-on-regression against a run of a deliberately slowed backend (tests/slowable.py).

The committed runs (tests/data/make_runs.py) make the verdicts deterministic: cmp-base and
cmp-again are two runs of one suite on one machine; cmp-slow is the same suite with
test-fff-slowable repeating its work 3 times. One test also makes a slowed run live.
"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import testbackends as slowable
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

import fffbench as fb
from fffbench import compare as C
from fffbench import report as R
from fffbench.cli import app

DATA = Path(__file__).parent / "data"
BASE, AGAIN, SLOW = DATA / "cmp-base", DATA / "cmp-again", DATA / "cmp-slow"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def samples_by_backend(path):
    df = fb.load_run(path, samples=True)
    return {b: np.asarray(s) for b, s in zip(df.backend, df.samples)}


def test_ratios_and_u_tests_come_from_the_samples():
    runs = R.load(BASE, AGAIN)
    t = C.compare_runs(runs)
    a, b = samples_by_backend(BASE), samples_by_backend(AGAIN)
    assert sorted(t.backend) == sorted(a) and len(t) == 3
    for _, r in t.iterrows():
        assert r.ratio == pytest.approx(np.median(b[r.backend]) / np.median(a[r.backend]), rel=1e-12)
        assert r.ci_low <= r.ratio <= r.ci_high
        assert r.p_value == pytest.approx(mannwhitneyu(b[r.backend], a[r.backend]).pvalue)
        assert r.p_slower == pytest.approx(mannwhitneyu(b[r.backend], 1.1 * a[r.backend],
                                                        alternative="greater").pvalue)
        assert r.base_ms == pytest.approx(np.median(a[r.backend]) * 1e3)
    s = C.summary(t)
    overall = s[(s.device == "all") & (s.backend == "all")].iloc[0]
    assert overall.geomean_ratio == pytest.approx(math.exp(np.log(t.ratio).mean()))
    assert overall.cases == 3


def test_two_runs_of_one_suite_show_no_regression(tmp_path):
    runs = R.load(BASE, AGAIN)
    t = C.compare_runs(runs)
    assert "slower" not in set(t.verdict)
    assert C.regressions(runs, t, 1.5).empty
    assert C.env_warnings(runs, "cmp-base", "cmp-again") == []
    res = invoke("compare", BASE, AGAIN, "--fail-on-regression", "1.5", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "No case is slower than 1.5x" in res.output and "environments match" in res.output
    assert {p.name for p in tmp_path.iterdir()} == {"compare.md", "compare.png", "compare.svg"}


def test_slowed_backend_is_flagged_and_fails_ci(tmp_path):
    runs = R.load(BASE, SLOW)
    t = C.compare_runs(runs).set_index("backend")
    a, b = samples_by_backend(BASE), samples_by_backend(SLOW)
    slow = t.loc["test-fff-slowable"]
    assert slow.verdict == "slower" and slow.ratio > 2
    assert slow.ratio == pytest.approx(np.median(b["test-fff-slowable"]) / np.median(a["test-fff-slowable"]))
    reg = C.regressions(runs, t.reset_index(), 1.5)
    assert list(reg.backend) == ["test-fff-slowable"]
    assert reg.p_regression.iloc[0] == pytest.approx(
        mannwhitneyu(b["test-fff-slowable"], 1.5 * a["test-fff-slowable"], alternative="greater").pvalue)
    assert C.regressions(runs, t.reset_index(), 5.0).empty       # not slower than 5x
    res = invoke("compare", BASE, SLOW, "--fail-on-regression", "1.5", "--out", tmp_path)
    assert res.exit_code == 1
    assert "Regressions beyond 1.5x" in res.output and "test-fff-slowable" in res.output
    assert invoke("compare", BASE, SLOW, "--out", tmp_path).exit_code == 0   # no gate without the flag


@pytest.fixture
def copy_run(tmp_path):
    def make(src, name, rows=None, env=None):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        if rows:
            lines = [json.loads(x) for x in (dst / "results.jsonl").read_text().splitlines()]
            (dst / "results.jsonl").write_text("".join(json.dumps(rows(x)) + "\n" for x in lines))
        if env:
            e = json.loads((dst / "run.json").read_text())
            env(e)
            (dst / "run.json").write_text(json.dumps(e))
        return dst
    return make


def test_a_run_against_its_own_copy(copy_run):
    runs = R.load(BASE, copy_run(BASE, "copy"))
    t = C.compare_runs(runs)
    assert (t.ratio == 1).all() and (t.verdict == "same").all() and (t.p_value == 1).all()


def test_environment_differences_are_warned(copy_run):
    def env(e):
        e["versions"]["torch"] = "9.9.9"
        e["ceilings"]["cpu"]["copy_gbps"] /= 2
        e["gpus"] = [{"name": "Some GPU", "max_clocks_mhz": "1980, 2619"}]
        e["env_vars"] = {"OMP_NUM_THREADS": "1"}

    def rows(r):
        return r | {"threads": 4}

    other = copy_run(BASE, "changed", rows=rows, env=env)
    runs = R.load(BASE, other)
    warns = " | ".join(C.env_warnings(runs, "cmp-base", "changed"))
    for what in ("thread counts differ: [1] (cmp-base) vs [4]", "torch versions differ", "copy bandwidth differs by -50%",
                 "GPU clocks differ", "environment variables differ"):
        assert what in warns
    t = C.compare_runs(runs)           # thread counts differ: matched without them, and said so
    assert len(t) == 3 and set(t.threads) == {"1 / 4"}
    res = invoke("compare", BASE, other, "--out", other.parent / "out")
    assert res.exit_code == 0 and "**warning**: thread counts differ" in res.output


def test_a_case_that_became_wrong_fails_ci(copy_run, tmp_path):
    def rows(r):
        if r["backend"] == "fff-gather":
            return r | {"status": "wrong", "reason": "rel err 1.0", "median_s": None}
        return r

    other = copy_run(BASE, "broken", rows=rows)
    runs = R.load(BASE, other)
    t = C.compare_runs(runs).set_index("backend")
    assert t.loc["fff-gather", "verdict"] == "ok -> wrong"
    assert list(C.regressions(runs, t.reset_index(), 1.5).backend) == ["fff-gather"]
    assert invoke("compare", BASE, other, "--fail-on-regression", "1.5", "--out", tmp_path).exit_code == 1


def test_plot_shows_the_ratios():
    runs = R.load(BASE, AGAIN, SLOW)
    t = C.compare_runs(runs)
    assert set(t.other) == {"cmp-again", "cmp-slow"} and len(t) == 6
    fig, data = C.plot_compare(t, runs)
    ax = fig.axes[0]
    xs = sorted(float(x) for line in ax.lines if line.get_marker() == "o" for x in line.get_xdata())
    assert np.allclose(xs, sorted(data.ratio))
    assert ax.get_xscale() == "log" and "ratio" in ax.get_xlabel()
    assert runs.machine("cmp-base") in ax.get_title()


@pytest.mark.parametrize("args,msg", [
    ([BASE], "at least two run directories"),
    ([BASE, AGAIN, "--threshold", "x"], "--threshold must be a number"),
    ([BASE, AGAIN, "--fail-on-regression", "0.5"], "--fail-on-regression must be > 1"),
    ([BASE, DATA / "mini"], "nothing to compare"),
    ([BASE, DATA / "nope"], "no such run directory"),
])
def test_compare_errors_are_one_line(args, msg):
    res = invoke("compare", *args)
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1
    assert msg in res.output


def test_a_live_slowed_run_is_caught(tmp_path, monkeypatch):
    """The whole path: two real runs of one suite, the second with the backend slowed 4x."""
    from fffbench.runner import run_suite
    from fffbench.suite import parse_suite

    suite = parse_suite("name: live\nsweep: {batch: 64, width: 32, threads: 1}\nfff: {depth: 5}\n"
                        "backends: [fff-gather, test-fff-slowable]\n"
                        "timing: {budget_s: 0.05, warmup_s: 0.01, min_reps: 10, max_reps: 30}\n")
    dirs = []
    for slowdown in ("1", "4"):
        monkeypatch.setenv(slowable.ENV, slowdown)
        dirs.append(run_suite(suite, out_root=tmp_path / slowdown, progress=False, ceilings=False).path)
    res = invoke("compare", *dirs, "--fail-on-regression", "1.5", "--out", tmp_path / "out")
    assert res.exit_code == 1, res.output
    t = C.compare_runs(R.load(*dirs)).set_index("backend")
    assert t.loc["test-fff-slowable", "verdict"] == "slower" and t.loc["test-fff-slowable", "ratio"] > 2
