"""fffbench compare: matching, ratios and tests from the raw samples, environment warnings, and
--fail-on-regression against a run of a deliberately slowed backend (tests/testbackends.py).

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
from scipy.stats import ttest_ind
from typer.testing import CliRunner

import fffbench as fb
from fffbench import compare as C
from fffbench.cli import app
from fffbench.plots import plot_compare
from fffbench.runs import load

DATA = Path(__file__).parent / "data"
BASE, AGAIN, SLOW = DATA / "cmp-base", DATA / "cmp-again", DATA / "cmp-slow"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def samples_by_backend(path):
    df = fb.load_run(path, samples=True)
    return {b: np.asarray(s) for b, s in zip(df.backend, df.samples)}


def welch_p(b, a, factor):
    """One-sided p of ``b > factor x a`` by Welch's t on the logarithms, computed with scipy."""
    return ttest_ind(np.log(b), np.log(a) + math.log(factor), equal_var=False, alternative="greater").pvalue


def test_ratios_and_tests_come_from_the_samples():
    runs = load(BASE, AGAIN)
    t = C.compare_runs(runs)
    a, b = samples_by_backend(BASE), samples_by_backend(AGAIN)
    assert sorted(t.backend) == sorted(a) and len(t) == 3
    for _, r in t.iterrows():
        assert r.ratio == pytest.approx(np.median(b[r.backend]) / np.median(a[r.backend]), rel=1e-12)
        assert r.ci_low <= r.ratio <= r.ci_high
        assert r.p_slower == pytest.approx(welch_p(b[r.backend], a[r.backend], 1.1))
        assert r.base_ms == pytest.approx(np.median(a[r.backend]) * 1e3)
    s = C.summary(t)
    overall = s[(s.device == "all") & (s.backend == "all")].iloc[0]
    assert overall.geomean_ratio == pytest.approx(math.exp(np.log(t.ratio).mean()))
    assert overall.cases == 3


def test_two_runs_of_one_suite_show_no_regression(tmp_path):
    runs = load(BASE, AGAIN)
    t = C.compare_runs(runs)
    assert "slower" not in set(t.verdict)
    assert C.regressions(t, 1.5).empty
    assert C.env_warnings(runs, "cmp-base", "cmp-again", t) == []
    res = invoke("compare", BASE, AGAIN, "--fail-on-regression", "1.5", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "No case is slower than 1.5x" in res.output and "environments match" in res.output
    assert {p.name for p in tmp_path.iterdir()} == {"compare.md", "compare.png", "compare.svg"}


def test_slowed_backend_is_flagged_and_fails_ci(tmp_path):
    runs = load(BASE, SLOW)
    t = C.compare_runs(runs).set_index("backend")
    a, b = samples_by_backend(BASE), samples_by_backend(SLOW)
    slow = t.loc["test-fff-slowable"]
    assert slow.verdict == "slower" and slow.ratio > 2
    assert slow.ratio == pytest.approx(np.median(b["test-fff-slowable"]) / np.median(a["test-fff-slowable"]))
    reg = C.regressions(t.reset_index(), 1.5)
    assert list(reg.backend) == ["test-fff-slowable"]
    assert reg.p_regression.iloc[0] == pytest.approx(welch_p(b["test-fff-slowable"], a["test-fff-slowable"], 1.5))
    assert C.regressions(t.reset_index(), 5.0).empty       # not slower than 5x
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
    runs = load(BASE, copy_run(BASE, "copy"))
    t = C.compare_runs(runs)
    assert (t.ratio == 1).all() and (t.verdict == "same").all()


def test_environment_differences_are_warned(copy_run):
    def env(e):
        e["versions"]["torch"] = "9.9.9"
        e["ceilings"]["cpu"]["copy_gbps"] /= 2
        e["gpus"] = [{"name": "Some GPU", "max_clocks_mhz": "1980, 2619"}]
        e["env_vars"] = {"OMP_NUM_THREADS": "1"}
        e["cpu"] |= {"family": 26, "model_number": 2, "l2_kib": 1024}

    def rows(r):
        return r | {"threads": 4}

    other = copy_run(BASE, "changed", rows=rows, env=env)
    runs = load(BASE, other)
    warns = " | ".join(C.env_warnings(runs, "cmp-base", "changed"))
    for what in ("thread counts differ: [1] (cmp-base) vs [4]", "torch version differs", "copy bandwidth differs by -50%",
                 "GPU clocks differ", "environment variables differ"):
        assert what in warns
    assert "CPU family" not in warns  # the base run predates the field: nothing to compare it with
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
    runs = load(BASE, other)
    t = C.compare_runs(runs).set_index("backend")
    assert t.loc["fff-gather", "verdict"] == "ok -> wrong"
    assert list(C.regressions(t.reset_index(), 1.5).backend) == ["fff-gather"]
    assert invoke("compare", BASE, other, "--fail-on-regression", "1.5", "--out", tmp_path).exit_code == 1


def test_plot_shows_the_ratios():
    runs = load(BASE, AGAIN, SLOW)
    t = C.compare_runs(runs)
    assert set(t.other) == {"cmp-again", "cmp-slow"} and len(t) == 6
    fig, data = plot_compare(t, runs)
    ax = fig.axes[0]
    xs = sorted(float(x) for line in ax.lines if line.get_marker() == "o" for x in line.get_xdata())
    assert np.allclose(xs, sorted(data.ratio))
    assert ax.get_xscale() == "log" and "ratio" in ax.get_xlabel()
    assert runs.machine("cmp-base") in ax.get_title()


@pytest.mark.parametrize("args,msg", [
    ([BASE], "at least two run directories"),
    ([BASE, AGAIN, "--threshold", "x"], "Invalid value for '--threshold'"),
    ([BASE, AGAIN, "--fail-on-regression", "0.5"], "Invalid value for '--fail-on-regression'"),
    ([BASE, DATA / "mini"], "nothing to compare"),
    ([BASE, DATA / "nope"], "no such run directory"),
])
def test_compare_errors_are_one_line(args, msg):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "compare", *map(str, args)], capture_output=True,
                       text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert msg in p.stderr
    res = invoke("compare", *args)
    assert res.exit_code == 2


def test_a_live_slowed_run_is_caught(tmp_path, monkeypatch):
    """The whole path: two real runs of one suite, the second with the backend slowed 4x."""
    from fffbench.session import run_suite
    from fffbench.suite import parse_suite

    suite = parse_suite("name: live\nsweep: {batch: 64, width: 32, threads: 1}\nfff: {depth: 5}\n"
                        "backends: [fff-gather, test-fff-slowable]\n"
                        "timing: {budget_s: 0.05, warmup_s: 0.01, min_reps: 10, max_reps: 30, processes: 2}\n")
    dirs = []
    for slowdown in ("1", "4"):
        monkeypatch.setenv(slowable.SLOWDOWN_ENV, slowdown)
        dirs.append(run_suite(suite, out_root=tmp_path / slowdown, ceilings=False).path)
    res = invoke("compare", *dirs, "--fail-on-regression", "1.5", "--out", tmp_path / "out")
    assert res.exit_code == 1, res.output
    t = C.compare_runs(load(*dirs)).set_index("backend")
    assert t.loc["test-fff-slowable", "verdict"] == "slower" and t.loc["test-fff-slowable", "ratio"] > 2


def three_sample_runs(root, base_s, other_s):
    """Two runs through the store whose one row has three samples each (a slow dense baseline)."""
    from types import SimpleNamespace

    from fffbench.store import RunStore
    from fffbench.timing.stats import summarize

    suite = SimpleNamespace(text="name: three\n", name="three", path="three.yaml", sha256="0" * 64)
    env = {"host": "h", "machine": "m", "versions": {}, "argv": []}
    paths = []
    for name, samples in (("before", base_s), ("after", other_s)):
        store = RunStore.create(root, name, env, suite)
        row = {"run_id": name, "row_id": "ff|ff-dense|wall/warm", "case_id": "ff", "family": "ff", "width": 768,
               "hidden": 3072, "batch": 16384, "dtype": "float32", "device": "cpu", "input": "gaussian", "seed": 0,
               "threads": 2, "backend": "ff-dense", "backend_family": "ff", "level": "cpu-l3", "regime": "wall/warm",
               "status": "ok", "bias": True, "flops": 1.0, "bytes": 1.0} | summarize(samples)
        store.append(row, samples)
        paths.append(store.path)
    return paths


def test_a_doubled_three_sample_baseline_is_flagged_and_fails_ci(tmp_path):
    before, after = three_sample_runs(tmp_path, [0.861, 0.865, 0.872], [1.650, 1.668, 1.701])
    t = C.compare_runs(load(before, after))
    assert t.verdict.iloc[0] == "slower" and 1.85 < t.ratio.iloc[0] < 1.95
    res = invoke("compare", before, after, "--fail-on-regression", "1.5")
    assert res.exit_code == 1 and "Regressions beyond 1.5x" in res.output
    assert not list(tmp_path.glob("compare-*"))  # nothing written without --out


def test_when_it_cannot_tell_it_says_so_never_same(tmp_path):
    before, after = three_sample_runs(tmp_path, [0.80, 1.10, 0.95], [1.0, 0.78, 1.15])
    t = C.compare_runs(load(before, after))
    assert t.verdict.iloc[0] == C.UNSURE


def test_two_vms_with_one_masked_cpu_name_are_told_apart(copy_run):
    """A VM shows "AMD EPYC" for different CPUs: family, model and cache sizes tell them apart, in
    the machine's name and in compare's warnings."""
    from fffbench.env import machine_name

    def env_of(family, l2):
        def env(e):
            e["cpu"] |= {"model": "AMD EPYC", "family": family, "model_number": 17, "l2_kib": l2}
            e["machine"] = machine_name(e)
        return env

    a, b = copy_run(BASE, "zen4", env=env_of(25, 1024)), copy_run(BASE, "zen5", env=env_of(26, 2048))
    runs = load(a, b)
    assert runs.machine("zen4").startswith("AMD EPYC family 25 model 17")
    warns = " | ".join(C.env_warnings(runs, "zen4", "zen5"))
    assert "CPU family differs: 25 (zen4) vs 26 (zen5)" in warns and "L2 size differs" in warns
