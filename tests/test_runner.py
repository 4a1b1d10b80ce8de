"""Runner and store: rows, statuses, schema, resume after Ctrl-C, merging runs."""
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

import fffbench as fb
from fffbench.cli import app
from fffbench.runner import plan, run_suite
from fffbench.store import COLUMNS, RESULTS, RUN_JSON, SAMPLES, STATUSES, RunStore
from fffbench.suite import parse_suite

TINY = """
name: tiny
sweep: {batch: [3, 40], width: 24, device: [cpu, cuda], threads: 1}
ff: {hidden: 16}
fff: {depth: [0, 3], trees: 2}
backends: [ff-dense, ff-bmm, fff-bmm, fff-gather]
timing: {budget_s: 0.01, warmup_s: 0, min_reps: 3}
comparisons:
  - {label: bmm, numerator: ff-bmm, denominator: fff-bmm, paper: {value: 40, source: test}}
  - {label: best, numerator: best-ff, denominator: best-fff}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    suite = parse_suite(TINY, "tiny.yaml")
    return suite, run_suite(suite, out_root=tmp_path_factory.mktemp("runs"), progress=False)


def test_every_planned_row_is_stored_once(tiny_run):
    suite, store = tiny_run
    df = store.frame()
    assert sorted(df.row_id) == sorted(t.row_id for t in plan(suite))
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)


def test_statuses_timings_and_skips(tiny_run):
    _, store = tiny_run
    df = store.frame(samples=True)
    cpu, cuda = df[df.device == "cpu"], df[df.device == "cuda"]
    assert (cpu.status == "ok").all() and set(df.status) <= set(STATUSES)
    assert (cpu.n_samples >= 3).all() and (cpu.median_s > 0).all()
    assert (cpu.min_s <= cpu.median_s).all() and (cpu.ci_low_s <= cpu.median_s).all()
    assert all(len(s) == n for s, n in zip(cpu.samples, cpu.n_samples))
    assert (cpu.rel_err < 1e-5).all() and (cpu[cpu.family == "fff"].path_agreement == 1.0).all()
    assert cpu.gbps.gt(0).all() and (cpu.flops > 0).all() and (cpu.threads == 1).all()
    import torch

    if not torch.cuda.is_available():
        assert (cuda.status == "skipped").all() and cuda.reason.str.contains("CUDA").all()
        assert cuda.median_s.isna().all()


def test_run_json_environment(tiny_run):
    _, store = tiny_run
    env = json.loads((store.path / RUN_JSON).read_text())
    for key in ("host", "machine", "cpu", "blas", "gpus", "versions", "git", "argv", "suite", "run_id"):
        assert key in env
    assert env["suite"]["name"] == "tiny" and len(env["suite"]["sha256"]) == 64
    assert env["versions"]["python"] and env["versions"]["numpy"] and env["cpu"]["logical_cores"] >= 1
    assert (store.path / "suite.yaml").read_text() == TINY


def test_wrong_and_crashing_backends_become_rows(tmp_path):
    suite = parse_suite("name: w\nsweep: {batch: 20, width: 16, threads: 1}\nff: {hidden: 8}\nfff: {depth: 2}\n"
                        "backends: [test-ff-raises, test-fff-no-activation, fff-bmm]\n"
                        "timing: {budget_s: 0.01, warmup_s: 0}\n")
    df = run_suite(suite, out_root=tmp_path, progress=False).frame()
    by = df.set_index("backend")
    assert by.loc["test-fff-no-activation", "status"] == "wrong"
    assert pd.isna(by.loc["test-fff-no-activation", "median_s"])       # never timed
    assert by.loc["test-ff-raises", "status"] == "error" and "boom" in by.loc["test-ff-raises", "reason"]
    assert by.loc["fff-bmm", "status"] == "ok"
    assert not (tmp_path / df.run_id[0] / SAMPLES).read_text().count("test-")  # no samples for untimed rows


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nsweep: {batch: 4, width: 8, threads: 1}\nfff: {depth: 1}\nbackends: [fff-bmm]\n"
                    "timing: {budget_s: 0.01, warmup_s: 0}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("[fff-bmm]", "[fff-bmm, test-fff-no-activation]"))
    runner = CliRunner()
    r = runner.invoke(app, ["run", str(good), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "Median time per call".lower() in r.output.lower() and "results:" in r.output
    r = runner.invoke(app, ["run", str(bad), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 1
    assert runner.invoke(app, ["validate", str(good)]).exit_code == 0
    assert runner.invoke(app, ["run"]).exit_code == 2
    assert runner.invoke(app, ["run", "--resume", str(tmp_path / "nowhere")]).exit_code == 2
    r = runner.invoke(app, ["backends", "--json"])
    assert r.exit_code == 0 and {"fff-bmm", "ff-dense"} <= {b["backend"] for b in json.loads(r.output)}
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0 and "versions" in json.loads(r.output)


def test_torn_last_line_is_dropped_and_runs_merge(tiny_run, tmp_path):
    _suite, store = tiny_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    with open(copy / RESULTS, "a") as f:
        f.write('{"run_id": "x", "row_id": "torn')
    assert len(RunStore.open(copy).frame()) == len(store.frame())
    merged = fb.load_run(store.path, copy)
    assert len(merged) == 2 * len(store.frame()) and set(merged.run_id) == {store.run_id}


SLOW = """
name: slowish
sweep: {batch: [64, 128, 256, 512], width: 64, threads: 1}
fff: {depth: [2, 6]}
ff: {hidden: 32}
backends: [ff-dense, fff-bmm, fff-gather]
timing: {budget_s: 0.25, warmup_s: 0, min_reps: 3}
"""


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fffbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sigint_then_resume_matches_uninterrupted_run(tmp_path):
    suite_file = tmp_path / "slowish.yaml"
    suite_file.write_text(SLOW)
    total = len(plan(parse_suite(SLOW)))
    proc = _cli("run", str(suite_file), "--out", str(tmp_path / "a"), "--no-progress")
    deadline = time.time() + 120
    results = None
    while time.time() < deadline:
        found = list((tmp_path / "a").glob(f"*/{RESULTS}"))
        if found and len(found[0].read_text().splitlines()) >= total // 3:
            results = found[0]
            break
        time.sleep(0.05)
    assert results is not None, "run produced no rows"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    kept = len(RunStore.open(results.parent).frame())
    assert 0 < kept < total
    r = _cli("run", "--resume", str(results.parent), "--no-progress")
    r.communicate(timeout=300)
    assert r.returncode == 0
    resumed = RunStore.open(results.parent).frame()
    full = _cli("run", str(suite_file), "--out", str(tmp_path / "b"), "--no-progress")
    full.communicate(timeout=300)
    uninterrupted = fb.load_run(next((tmp_path / "b").iterdir()))
    key = ["row_id", "status", "backend", "case_id", "regime"]
    pd.testing.assert_frame_equal(resumed[key].sort_values("row_id").reset_index(drop=True),
                                  uninterrupted[key].sort_values("row_id").reset_index(drop=True))
    assert len(resumed) == total and resumed.row_id.is_unique
    assert len(json.loads((results.parent / RUN_JSON).read_text())["resumed"]) == 1


def test_resume_refuses_a_different_suite(tmp_path, tiny_run):
    _, store = tiny_run
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("budget_s: 0.01", "budget_s: 0.02"))
    r = CliRunner().invoke(app, ["run", str(other), "--resume", str(store.path)])
    assert r.exit_code == 2 and "hash mismatch" in r.output


def test_harness_failure_keeps_rows_and_says_how_to_resume(tmp_path, monkeypatch):
    from fffbench import runner
    from fffbench.correctness import Reference

    real = Reference.compute
    calls = {"n": 0}

    def flaky(layer, weights, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("cannot allocate the reference")
        return real(layer, weights, x)

    monkeypatch.setattr(runner.Reference, "compute", staticmethod(flaky))
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nsweep: {batch: [4, 8], width: 8, threads: 1}\nfff: {depth: 1}\nbackends: [fff-bmm]\n"
                     "timing: {budget_s: 0.01, warmup_s: 0}\n")
    r = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 1 and "out of memory" in r.output and "--resume" in r.output
    run_dir = next((tmp_path / "r").iterdir())
    assert len(RunStore.open(run_dir).frame()) == 1
    monkeypatch.setattr(runner.Reference, "compute", staticmethod(real))
    r = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--no-progress"])
    assert r.exit_code == 0 and len(RunStore.open(run_dir).frame()) == 2
    assert "ceilings" in RunStore.open(run_dir).env()


def test_backend_slower_than_max_call_is_checked_not_timed(tmp_path):
    suite = parse_suite("name: cap\nsweep: {batch: 64, width: 32, threads: 1}\nfff: {depth: 3}\n"
                        "backends: [fff-bmm]\ntiming: {budget_s: 0.01, warmup_s: 0, max_call_s: 0.0000001}\n")
    row = run_suite(suite, out_root=tmp_path, progress=False, ceilings=False).frame().iloc[0]
    assert row.status == "skipped" and "not timed" in row.reason and "max_call_s" in row.reason
    assert row.rel_err < 1e-5 and pd.isna(row.median_s)
