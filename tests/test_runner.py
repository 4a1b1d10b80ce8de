"""The runner: rows, statuses, worker processes, paired ratios, crashing backends, Ctrl-C, SIGTERM
and resume."""
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
from fffbench.runner import plan
from fffbench.session import run_suite
from fffbench.store import COLUMNS, RATIOS, RUN_JSON, SAMPLES, STATUSES, RunStore
from fffbench.suite import parse_suite

TINY = """
name: tiny
sweep: {batch: [3, 40], width: 24, device: [cpu, cuda], threads: 1}
ff: {hidden: 16}
fff: {depth: [0, 3], trees: 2}
backends: [ff-dense, ff-bmm, fff-bmm, fff-gather]
timing: {budget_s: 0.01, warmup_s: 0, min_reps: 3, processes: 2}
comparisons:
  - {label: bmm, numerator: ff-bmm, denominator: fff-bmm}
  - {label: best, numerator: best-ff, denominator: best-fff}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    suite = parse_suite(TINY, "tiny.yaml")
    return suite, run_suite(suite, out_root=tmp_path_factory.mktemp("runs"))


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


def test_rows_are_measured_in_several_worker_processes(tiny_run):
    _, store = tiny_run
    df = store.frame(samples=True)
    ok = df[df.status == "ok"]
    assert (ok.n_processes == 2).all()
    lines = [json.loads(ln) for ln in (store.path / SAMPLES).read_text().splitlines()]
    by_row = {}
    for ln in lines:
        by_row.setdefault(ln["row_id"], []).append(ln)
    for row_id in ok.row_id:
        procs = by_row[row_id]
        assert sorted(p["process"] for p in procs) == [0, 1]       # each process's samples apart
        assert all(len(p["rounds"]) == len(p["samples"]) for p in procs)
        assert "gate" in procs[0] and "gate" not in procs[1]       # checked once, in the first process
    for _, r in ok.iterrows():  # rows of one group share the measurement (one attempt, one group)
        assert r.group and r.attempt


def test_declared_comparisons_are_stored_as_paired_ratios(tiny_run):
    _, store = tiny_run
    ratios = [json.loads(ln) for ln in (store.path / RATIOS).read_text().splitlines()]
    labels = {r["label"] for r in ratios}
    assert labels == {"bmm", "best"}
    df = store.frame().set_index("row_id")
    for r in ratios:
        assert r["paired"] and r["n_processes"] == 2 and len(r["per_process"]) == 2
        assert r["ci_low"] <= r["ratio"] <= r["ci_high"]
        num, den = df.loc[r["numerator"]], df.loc[r["denominator"]]
        assert num.group == den.group and num.attempt == den.attempt == r["attempt"]
        # paired ratio near the ratio of medians, but formed round by round
        assert 0.5 < r["ratio"] / (num.median_s / den.median_s) < 2


def test_run_json_environment(tiny_run):
    _, store = tiny_run
    env = json.loads((store.path / RUN_JSON).read_text())
    for key in ("host", "machine", "cpu", "blas", "gpus", "versions", "git", "argv", "suite", "run_id", "threads_all",
                "comparisons", "ceilings", "ceilings_end", "libraries"):
        assert key in env
    assert env["suite"]["name"] == "tiny" and len(env["suite"]["sha256"]) == 64
    assert [c["label"] for c in env["comparisons"]] == ["bmm", "best"]
    assert (store.path / "suite.yaml").read_text() == TINY
    assert not (store.path / "cache").exists()  # references are removed once the run is complete


def test_threads_all_stays_symbolic_and_is_resolved_once(tmp_path):
    suite = parse_suite("name: t\nsweep: {batch: 4, width: 8, threads: [1, all]}\nfff: {depth: 1}\n"
                        "backends: [test-fff-numpy]\ntiming: {budget_s: 0.01, warmup_s: 0, processes: 1}\n")
    assert {c.threads for c in suite.cases} == {1, "all"}
    assert len({c.case_id for c in suite.cases}) == 2
    store = run_suite(suite, out_root=tmp_path, ceilings=False)
    env = store.env()
    df = store.frame()
    assert set(df.threads) == {1, env["threads_all"]} and df.case_id.str.endswith("-tall").sum() == 1


def test_wrong_and_crashing_backends_become_rows(tmp_path):
    suite = parse_suite("name: w\nsweep: {batch: 20, width: 16, threads: 1}\nff: {hidden: 8}\nfff: {depth: 2}\n"
                        "backends: [test-ff-raises, test-fff-no-activation, test-fff-crash, test-fff-oom, test-fff-numpy]\n"
                        "timing: {budget_s: 0.01, warmup_s: 0, processes: 2}\n")
    df = run_suite(suite, out_root=tmp_path, ceilings=False).frame()
    by = df.set_index("backend")
    assert by.loc["test-fff-no-activation", "status"] == "wrong"
    assert pd.isna(by.loc["test-fff-no-activation", "median_s"])       # never timed
    assert by.loc["test-ff-raises", "status"] == "error" and "boom" in by.loc["test-ff-raises", "reason"]
    crash = by.loc["test-fff-crash"]
    assert crash.status == "error" and "SIGSEGV" in crash.reason and "first call" in crash.reason
    assert by.loc["test-fff-oom", "status"] == "error" and by.loc["test-fff-oom", "reason"].startswith("out of memory")
    assert by.loc["test-fff-numpy", "status"] == "ok" and by.loc["test-fff-numpy", "n_processes"] == 2
    timed = {json.loads(ln)["row_id"].split("|")[1] for ln in (tmp_path / df.run_id[0] / SAMPLES).read_text().splitlines()}
    assert timed == {"test-fff-numpy"}  # no samples for untimed rows


def test_a_crash_in_a_later_process_is_an_error_row_and_the_rest_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("FFFBENCH_TEST_CRASH_AFTER", "3")  # passes the gate and warm-up, dies while sampling
    monkeypatch.setenv("FFFBENCH_TEST_SIGNAL", "SIGABRT")
    suite = parse_suite("name: w\nsweep: {batch: 20, width: 16, threads: 1}\nfff: {depth: 2}\n"
                        "backends: [test-fff-crash, test-fff-numpy]\ntiming: {budget_s: 0.05, warmup_s: 0, processes: 2}\n")
    df = run_suite(suite, out_root=tmp_path, ceilings=False).frame().set_index("backend")
    assert df.loc["test-fff-crash", "status"] == "error" and "SIGABRT" in df.loc["test-fff-crash", "reason"]
    assert df.loc["test-fff-numpy", "status"] == "ok" and df.loc["test-fff-numpy", "n_processes"] == 2


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nsweep: {batch: 4, width: 8, threads: 1}\nfff: {depth: 1}\nbackends: [test-fff-numpy]\n"
                    "timing: {budget_s: 0.01, warmup_s: 0, processes: 1}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("[test-fff-numpy]", "[test-fff-numpy, test-fff-no-activation]"))
    runner = CliRunner()
    r = runner.invoke(app, ["run", str(good), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "median time per call" in r.output.lower() and "results:" in r.output
    assert r.output.index("run directory:") < r.output.index("results:")
    assert "next: fffbench report" in r.output
    r = runner.invoke(app, ["run", str(bad), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 1
    assert runner.invoke(app, ["validate", str(good)]).exit_code == 0
    assert runner.invoke(app, ["run"]).exit_code == 2
    assert runner.invoke(app, ["run", "--resume", str(tmp_path / "nowhere")]).exit_code == 2
    r = runner.invoke(app, ["run", str(good), "--device", "cuda", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "no case on cuda" in r.output
    r = runner.invoke(app, ["backends", "--json"])
    assert r.exit_code == 0 and {"fff-bmm", "ff-dense"} <= {b["backend"] for b in json.loads(r.output)}
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0 and "versions" in json.loads(r.output)
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("fffbench ") and fb.__version__ in r.output


def test_progress_lines_without_a_terminal(tmp_path):
    suite = tmp_path / "p.yaml"
    suite.write_text("name: p\nsweep: {batch: [4, 8], width: 8, threads: 1}\nfff: {depth: 1}\n"
                     "backends: [test-fff-numpy]\ntiming: {budget_s: 0.01, warmup_s: 0, processes: 1}\n")
    p = subprocess.run([sys.executable, "-m", "fffbench.cli", "run", str(suite), "--out", str(tmp_path / "o"),
                        "--no-summary"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("run directory: ")
    progress = [ln for ln in lines if ln.startswith("[") and not ln.startswith("[process")]
    assert [ln.split("]")[0] for ln in progress] == ["[1/2", "[2/2"]
    assert [ln for ln in lines if ln.startswith("[process")][-1].startswith("[process 2/2+] (ETA ")
    assert all("test-fff-numpy" in ln and ": ok " in ln and "ETA" in ln for ln in progress)
    assert lines[-1].startswith("next: fffbench report ")


SLOW = """
name: slowish
sweep: {batch: [64, 128, 256, 512], width: 64, threads: 1}
fff: {depth: [2, 6]}
backends: [test-fff-numpy]
timing: {budget_s: 0.2, warmup_s: 0, min_reps: 3, processes: 2}
"""


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fffbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _journalled(run_dir) -> set:
    lines = [json.loads(ln) for ln in (run_dir / SAMPLES).read_text().splitlines() if ln.strip()]
    return {(ln["row_id"], ln["attempt"], ln["process"]) for ln in lines if ln.get("samples")}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume_matches_uninterrupted_run(tmp_path, sig):
    """Groups take turns, so an interruption mid-run finds processes journalled but few rows stored:
    the resumed run must finish every row and keep every process measured before the signal."""
    suite_file = tmp_path / "slowish.yaml"
    suite_file.write_text(SLOW)
    total = len(plan(parse_suite(SLOW)))
    proc = _cli("run", str(suite_file), "--out", str(tmp_path / "a"), "--no-progress")
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        found = list((tmp_path / "a").glob(f"*/{SAMPLES}"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            run_dir = found[0].parent
            break
        time.sleep(0.05)
    assert run_dir is not None, "run journalled no process"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert len(RunStore.open(run_dir).frame()) < total
    before = _journalled(run_dir)
    assert before
    r = _cli("run", "--resume", str(run_dir), "--no-progress")
    r.communicate(timeout=300)
    assert r.returncode == 0
    resumed = RunStore.open(run_dir).frame(samples=True)
    assert len(resumed) == total and resumed.row_id.is_unique
    assert sorted(resumed.row_id) == sorted(t.row_id for t in plan(parse_suite(SLOW)))
    assert all(isinstance(s, list) and s for s in resumed.samples)
    assert before <= _journalled(run_dir)
    kept = {(row_id, attempt) for row_id, attempt, _ in before}
    assert kept & set(zip(resumed.row_id, resumed.attempt)), "no interrupted measurement was continued"
    assert len(json.loads((run_dir / RUN_JSON).read_text())["resumed"]) == 1


def test_resume_refuses_a_different_suite(tmp_path, tiny_run):
    _, store = tiny_run
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("budget_s: 0.01", "budget_s: 0.02"))
    r = CliRunner().invoke(app, ["run", str(other), "--resume", str(store.path)])
    assert r.exit_code == 2 and "hash mismatch" in r.output


def test_harness_failure_keeps_rows_and_says_how_to_resume(tmp_path, monkeypatch):
    from fffbench import casedata
    from fffbench.correctness import Reference

    real = Reference.compute
    calls = {"n": 0}

    def flaky(layer, weights, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("cannot allocate the reference")
        return real(layer, weights, x)

    monkeypatch.setattr(casedata.Reference, "compute", staticmethod(flaky))
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nsweep: {batch: [4, 8], width: 8, threads: 1}\nfff: {depth: 1}\nbackends: [test-fff-numpy]\n"
                     "timing: {budget_s: 0.01, warmup_s: 0, processes: 1}\n")
    r = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 1 and "out of memory" in r.output and "--resume" in r.output
    run_dir = next((tmp_path / "r").iterdir())
    assert len(RunStore.open(run_dir).frame()) == 1
    monkeypatch.setattr(casedata.Reference, "compute", staticmethod(real))
    r = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--no-progress"])
    assert r.exit_code == 0 and len(RunStore.open(run_dir).frame()) == 2
    assert "ceilings" in RunStore.open(run_dir).env()


def test_backend_slower_than_max_call_is_checked_not_timed(tmp_path):
    suite = parse_suite("name: cap\nsweep: {batch: 64, width: 32, threads: 1}\nfff: {depth: 3}\n"
                        "backends: [test-fff-numpy]\ntiming: {budget_s: 0.01, warmup_s: 0, max_call_s: 0.0002, "
                        "processes: 1}\n")
    row = run_suite(suite, out_root=tmp_path, ceilings=False).frame().iloc[0]
    assert row.status == "skipped" and "not timed" in row.reason and "max_call_s" in row.reason
    assert row.rel_err < 1e-5 and pd.isna(row.median_s)


def test_the_load_probe_sees_other_processes_and_steal(tmp_path):
    from fffbench.timing.load import LoadProbe, Snapshot

    (tmp_path / "stat").write_text("cpu  100 0 50 1000 0 0 0 7 0 0\n")
    probe = LoadProbe(str(tmp_path / "stat"))
    a = probe.snapshot()
    assert a.busy == 150 and a.steal == 7
    quiet = Snapshot(a.wall + 1.0, a.busy + 100, a.steal, a.own + 1.0)      # only this process ran
    busy = Snapshot(a.wall + 1.0, a.busy + 150, a.steal, a.own + 1.0)       # another took half a core
    stolen = Snapshot(a.wall + 1.0, a.busy + 100, a.steal + 30, a.own + 1.0)  # the hypervisor took 30%
    assert not probe.disturbed(a, quiet)[0]
    assert probe.disturbed(a, busy)[0] and probe.disturbed(a, busy)[1] == pytest.approx(0.5)
    assert probe.disturbed(a, stolen)[0]


def test_blocks_taken_beside_a_busy_process_are_set_aside(tmp_path):
    """A process hogging a core while the suite runs: its blocks are re-taken, and processes that
    stay disturbed are set aside (for every row alike), the row saying how many samples went."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        suite = parse_suite("name: busy\nsweep: {batch: 256, width: 64, threads: 1}\nfff: {depth: 6}\n"
                            "backends: [test-fff-numpy]\n"
                            "timing: {budget_s: 0.8, warmup_s: 0, processes: 2, max_processes: 2, retake: 1}\n")
        store = run_suite(suite, out_root=tmp_path, ceilings=False)
    finally:
        hog.kill()
    row = store.frame().iloc[0]
    lines = [json.loads(ln) for ln in (store.path / SAMPLES).read_text().splitlines()]
    assert row.status == "ok" and row.n_set_aside > 0
    assert any(ln["set_aside"] or ln["disturbed"] for ln in lines)
