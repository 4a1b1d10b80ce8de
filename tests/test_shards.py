"""Sharded runs: the local executor against the in-process run, device exclusivity, a shard that
dies and is re-run alone, Slurm job scripts (with a stand-in sbatch), merging, machines of one run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fffbench.cli import app
from fffbench.jsonl import read_lines
from fffbench.runner import plan
from fffbench.runs import load
from fffbench.session import run_suite
from fffbench.shards import plan as shard_plan
from fffbench.shards.timeline import intervals, overlaps
from fffbench.store import MANIFEST, RESULTS, RUN_JSON, SAMPLES, RunStore
from fffbench.suite import load_suite, parse_suite


def read_jsonl(path):
    return read_lines(path).objects

ROOT = Path(__file__).resolve().parent.parent
KEY = ["case_id", "backend", "regime"]

TINY = """
name: tiny
sweep: {batch: [3, 40], width: 24, threads: 1}
ff: {hidden: [16, 32]}
fff: {depth: [0, 3], trees: 2}
backends: [test-ff-numpy, test-fff-numpy]
timing: {budget_s: 0.01, warmup_s: 0, min_reps: 3, processes: 2}
"""
#: two workloads of four cases each (one shard each), six rows apiece
QUICK = TINY.replace("name: tiny", "name: quick").replace("backends: [test-ff-numpy, test-fff-numpy]",
                                                            "backends: [test-ff-numpy, test-fff-numpy, fff-gather]")


def _fffbench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fffbench", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _keys(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[KEY].to_numpy()))


# --- the local executor against the in-process run --------------------------------------------------

@pytest.fixture(scope="module")
def quick_local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    (out.parent / "quick.yaml").write_text(QUICK)
    p = _fffbench("run", str(out.parent / "quick.yaml"), "--executor", "local", "--shards", "2", "--out", str(out),
                  "--no-progress")
    assert p.returncode == 0, p.stderr + p.stdout
    return _run_dir(out), p


def test_local_two_shards_give_the_cases_of_the_single_process_run(quick_local, tmp_path):
    run_dir, proc = quick_local
    suite = parse_suite(QUICK, "quick.yaml")
    inline = run_suite(suite, out_root=tmp_path, ceilings=False).frame()
    sharded = RunStore.open(run_dir).frame(samples=True)
    assert _keys(sharded) == _keys(inline) and len(sharded) == len(inline) == len(plan(suite))
    assert sharded.row_id.is_unique and (sharded.status == "ok").all()
    assert set(sharded.shard) == {0, 1} and set(sharded.run_id) == {run_dir.name}
    assert all(isinstance(s, list) and len(s) == n for s, n in zip(sharded.samples, sharded.n_samples))
    # merged into one run directory: the top-level files hold every row, for tools that read them directly
    top = read_jsonl(run_dir / RESULTS)
    assert {r["row_id"] for r in top} == set(sharded.row_id) and len(top) == len(sharded)
    assert {r["row_id"] for r in read_jsonl(run_dir / SAMPLES)} == set(sharded.row_id)
    assert "results:" in proc.stdout and "2 shards" in proc.stdout


def test_each_shard_stores_its_environment_and_placement(quick_local):
    run_dir, _ = quick_local
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert manifest["executor"] == "local" and manifest["n_shards"] == 2
    assert sorted(i for s in manifest["shards"] for i in s["cases"]) == list(range(8))
    for s in manifest["shards"]:
        env = json.loads((run_dir / s["dir"] / RUN_JSON).read_text())
        for key in ("host", "machine", "cpu", "versions", "ceilings", "suite"):
            assert env[key], key
        assert env["run_id"] == run_dir.name and env["shard"]["index"] == s["index"]
        assert env["threads_all"] >= 1 and env["shard"]["lock_dir"]
        assert s["jobs"] and s["jobs"][-1]["executor"] == "local"
        rows = RunStore.open(run_dir / s["dir"]).frame()
        assert set(rows.case_id) == set(s["case_ids"]) and (rows.host == env["host"]).all()


def test_no_two_measurements_overlap_on_a_device(quick_local):
    run_dir, _ = quick_local
    iv = intervals(RunStore.open(run_dir).frame())
    assert len(iv) == 2 and set(iv.shard) == {0, 1} and not overlaps(iv)  # one measurement per group of rows
    assert (iv.backend == "6 rows measured together").all()
    r = CliRunner().invoke(app, ["shards", str(run_dir), "--intervals"])
    assert r.exit_code == 0, r.output
    assert "No two measurements overlapped" in r.output and "Wall time" in r.output
    assert "shard 0: done, 6/6 rows" in r.output and "shard 1: done, 6/6 rows" in r.output
    assert "Run wall time" in r.output
    r = CliRunner().invoke(app, ["run", "--resume", str(run_dir / "shards" / "shard-001")])
    assert r.exit_code == 2 and f"--resume {run_dir} --shard 1" in r.output  # not the whole suite into one shard


def test_report_reads_a_sharded_run(quick_local, tmp_path):
    run_dir, _ = quick_local
    r = CliRunner().invoke(app, ["report", str(run_dir), "--no-plots", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "| shards | 0, 1 on" in r.output and "executor local" in r.output


def test_the_overlap_check_catches_overlaps():
    base = {"host": "h", "device": "cuda", "device_uuid": "GPU-a", "device_index": "0", "shard": 0, "case_id": "c",
            "backend": "b", "regime": "r", "status": "ok"}
    rows = [base | {"started_at": "2026-01-01T00:00:00.000+00:00", "finished_at": "2026-01-01T00:00:02.000+00:00"},
            base | {"shard": 1, "started_at": "2026-01-01T00:00:01.000+00:00",
                    "finished_at": "2026-01-01T00:00:03.000+00:00"},
            base | {"device_uuid": "GPU-b", "started_at": "2026-01-01T00:00:01.000+00:00",
                    "finished_at": "2026-01-01T00:00:03.000+00:00"},
            base | {"device": "cpu", "device_uuid": None, "started_at": "2026-01-01T00:00:04.000+00:00",
                    "finished_at": "2026-01-01T00:00:05.000+00:00"}]
    iv = intervals(pd.DataFrame(rows))
    bad = overlaps(iv)
    assert len(bad) == 1 and {bad[0][0]["shard"], bad[0][1]["shard"]} == {0, 1}  # GPU-b in parallel is fine
    rows.append(base | {"device_uuid": "GPU-b", "started_at": "2026-01-01T00:00:04.500+00:00",
                        "finished_at": "2026-01-01T00:00:06.000+00:00"})
    assert len(overlaps(intervals(pd.DataFrame(rows)))) == 2  # a GPU case beside a CPU case on its host


# --- a shard that dies ----------------------------------------------------------------------------------

TINY_GPU = TINY.replace("threads: 1}", "threads: 1, device: [cpu, cuda]}")


def test_a_killed_shard_is_reported_and_rerun_alone_without_duplicates(tmp_path):
    """Shard 1 dies abruptly (its process killed, as the OOM killer would) in its second group; the
    rows it stored before stay, shard 0 is untouched, and re-running shard 1 alone completes it."""
    suite_text = TINY_GPU.replace("test-fff-numpy]", "test-fff-numpy, test-fff-kill-shard, fff-gather]").replace(
        "[3, 40]", "[3, 40, 80]")
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(suite_text)
    total = len(plan(parse_suite(suite_text)))
    env = os.environ | {"FFFBENCH_TEST_KILL_GPU": "1", "FFFBENCH_TEST_KILL_BATCH": "40",
                        "FFFBENCH_TEST_KILL_MARKER": str(tmp_path / "killed")}
    p = _fffbench("run", str(suite_file), "--executor", "local", "--shards", "2", "--gpus", "0,1",
                  "--out", str(tmp_path / "r"), "--no-progress", "--no-summary", env=env)
    assert p.returncode == 1, p.stderr
    run_dir = _run_dir(tmp_path / "r")
    manifest = shard_plan.load(run_dir)
    assert [s["gpu"] for s in manifest["shards"]] == ["0", "1"]
    for s in manifest["shards"]:  # each shard's processes saw only its own GPU (none exists here: CUDA rows skip)
        assert RunStore.open(run_dir / s["dir"]).env()["shard"]["cuda_visible_devices"] == s["gpu"]
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("shard 1"))
    stored1 = len(RunStore.open(run_dir / "shards" / "shard-001").frame())
    missing = manifest["shards"][1]["rows"] - stored1
    assert missing > 0 and "failed" in line and f"{missing} of {manifest['shards'][1]['rows']} rows missing" in line
    assert "Traceback" not in p.stderr and not any(ln.startswith("shard 0") for ln in p.stderr.splitlines())
    command = line.split("re-run it alone: ", 1)[1].split()
    assert command == ["fffbench", "run", "--resume", str(run_dir), "--shard", "1", "--executor", "local"]
    kept = RunStore.open(run_dir).frame()
    assert len(kept) == total - missing  # shard 0 whole, shard 1 what it stored: nothing measured is lost
    assert len(read_jsonl(run_dir / RESULTS)) == len(kept)
    r = CliRunner().invoke(app, ["shards", str(run_dir)])
    assert f"shard 1: partial, {stored1}/" in r.output and "--shard 1" in r.output

    p = _fffbench(*command[1:], "--no-progress", "--no-summary", env=env)
    assert p.returncode == 0, p.stderr
    df = RunStore.open(run_dir).frame()
    assert len(df) == total and df.row_id.is_unique
    assert sorted(df.row_id) == sorted(t.row_id for t in plan(parse_suite(suite_text)))
    assert RunStore.open(run_dir / "shards" / "shard-001").env()["resumed"][0]["shard"]["cuda_visible_devices"] == "1"
    assert not overlaps(intervals(df))
    shard1 = RunStore.open(run_dir / "shards" / "shard-001")
    assert len(shard1.rows()) == manifest["shards"][1]["rows"]  # the rows kept were not measured again
    assert len(shard1.env()["resumed"]) == 1
    assert len(shard_plan.load(run_dir)["shards"][1]["jobs"]) == 2
    r = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--no-progress", "--no-summary"])
    assert r.exit_code == 0 and "nothing to run" in r.output


def test_inline_executor_finishes_a_shard_in_this_process(tmp_path):
    from fffbench.shards import launch

    suite = parse_suite(TINY, str(tmp_path / "tiny.yaml"))
    run_dir, manifest = launch.create(suite, tmp_path, 3, "inline")
    assert manifest["n_shards"] == 2  # two workloads: no more shards than groups to give them
    outcome = launch.run_shards(run_dir, manifest, [1], "inline", wait=True, progress=False)
    lines = launch.conclude(outcome)
    assert outcome.failures == {1: None}
    assert [ln.split(" ")[:2] for ln in lines] == [["shard", "0"]]  # not run yet, said so
    assert all("did not finish" in ln and "--executor inline" in ln for ln in lines)
    outcome = launch.resume(run_dir, progress=False)
    assert outcome.shards == [0] and not launch.conclude(outcome)
    assert len(RunStore.open(run_dir).frame()) == len(plan(suite))


def test_replicas_run_every_case_and_compare_as_machines(tmp_path):
    from fffbench.shards import launch

    suite = parse_suite(TINY, str(tmp_path / "tiny.yaml"))
    outcome = launch.start(suite, tmp_path, 2, "inline", replicate=True, progress=False)
    assert not launch.conclude(outcome)
    df = RunStore.open(outcome.run_dir).frame(samples=True)
    assert len(df) == 2 * len(plan(suite)) and set(df.shard) == {0, 1}
    assert df.samples.map(lambda v: isinstance(v, list)).all()
    merged = read_jsonl(outcome.run_dir / RESULTS)
    merged_samples = {(ln["row_id"], ln["shard"]) for ln in read_jsonl(outcome.run_dir / SAMPLES)}
    assert len(merged) == len(df) and len(merged_samples) == df.status.eq("ok").sum()
    labels = load(outcome.run_dir).labels
    assert len(labels) == 2 and all(label.endswith(("-shard0", "-shard1")) for label in labels)
    r = CliRunner().invoke(app, ["compare", str(outcome.run_dir), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert f"{labels[1]} (" in r.output and "## Cases" in r.output


# --- Slurm, with a stand-in sbatch ------------------------------------------------------------------------

@pytest.fixture
def fake_slurm(tmp_path):
    """``sbatch`` that keeps the script it is given and answers as Slurm does; ``srun`` that exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {bin_dir}/*.sh 2>/dev/null | wc -l)\n'
                                    f'cp "$1" {bin_dir}/submitted-$n.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir, os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_slurm_job_script_and_manifest(fake_slurm, tmp_path):
    bin_dir, env = fake_slurm
    p = _fffbench("run", "suites/scaling.yaml", "--executor", "slurm", "--shards", "3", "--slurm-partition", "gpu",
                  "--slurm-time", "90", "--slurm-gpus-per-shard", "1", "--slurm-cpus-per-shard", "16",
                  "--slurm-account", "proj", "--slurm-extra", "constraint=h100", "--slurm-extra", "exclusive",
                  "--slurm-setup", "source .venv/bin/activate", "--no-wait", "--out", str(tmp_path / "r"), env=env)
    assert p.returncode == 0, p.stderr
    run_dir = _run_dir(tmp_path / "r")
    (script,) = [f.read_text() for f in bin_dir.glob("submitted-*.sh")]
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --account=proj", "#SBATCH --constraint=h100",
                 "#SBATCH --exclusive", "#SBATCH --array=0-2%3", "#SBATCH --signal=USR2@90"):
        assert line in script.splitlines(), line
    assert f"#SBATCH --output={run_dir}/slurm/%A_%a_0_log.out" in script
    assert "source .venv/bin/activate" in script
    assert re.search(rf"srun .*-m submitit.core._submit {re.escape(str(run_dir))}/slurm$", script, re.MULTILINE)
    manifest = shard_plan.load(run_dir)
    assert manifest["executor"] == "slurm" and manifest["options"]["slurm"]["partition"] == "gpu"
    assert [s["jobs"][-1]["job_id"] for s in manifest["shards"]] == ["4242_0", "4242_1", "4242_2"]
    suite = load_suite(ROOT / "suites" / "scaling.yaml")
    assert sum(s["rows"] for s in manifest["shards"]) == len(plan(suite))
    assert all(s["devices"] == ["cpu", "cuda"] for s in manifest["shards"])  # each device's work is spread
    assert "4242_1" in p.stdout and f"fffbench merge {run_dir}" in p.stdout and f"fffbench report {run_dir}" in p.stdout
    # one shard again, alone: a single job (no array), same parameters
    p = _fffbench("run", "--resume", str(run_dir), "--shard", "1", "--executor", "slurm", "--slurm-time", "30",
                  "--no-wait", env=env)
    assert p.returncode == 0, p.stderr
    scripts = sorted(bin_dir.glob("submitted-*.sh"))
    again = scripts[1].read_text().splitlines()
    assert len(scripts) == 2 and not [ln for ln in again if "--array" in ln]
    assert "#SBATCH --partition=gpu" in again and "#SBATCH --time=30" in again  # recorded options, one changed
    assert [j["job_id"] for j in shard_plan.load(run_dir)["shards"][1]["jobs"]] == ["4242_1", "4242"]


def test_a_slurm_array_task_runs_its_shard(fake_slurm, tmp_path):
    """What a compute node does with the submission: submitit's entry point, with the environment
    Slurm gives array task 1, runs shard 1 into its directory (and a requeued job resumes it)."""
    from fffbench.shards.submit import ShardJob

    _, env = fake_slurm
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(TINY)
    p = _fffbench("run", str(suite_file), "--executor", "slurm", "--shards", "2", "--no-wait",
                  "--out", str(tmp_path / "r"), env=env)
    assert p.returncode == 0, p.stderr
    run_dir = _run_dir(tmp_path / "r")
    task = env | {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4244", "SLURM_ARRAY_JOB_ID": "4242",
                  "SLURM_ARRAY_TASK_ID": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                  "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node1"}
    job = subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(run_dir / "slurm")], env=task,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert (run_dir / "slurm" / "4242_1_0_result.pkl").exists()
    states = {s["index"]: s["state"] for s in shard_plan.progress(run_dir, shard_plan.load(run_dir))}
    assert states == {0: "not started", 1: "done"}
    resubmitted = ShardJob(str(run_dir), 1).checkpoint()  # on a time limit or preemption: the same shard again
    assert isinstance(resubmitted.function, ShardJob) and resubmitted.function.index == 1
    assert resubmitted.function()["rows"] == shard_plan.load(run_dir)["shards"][1]["rows"]  # resumed: nothing new


def test_slurm_options_map_to_submitit_parameters():
    from fffbench.cli.shards import slurm_options
    from fffbench.shards.slurm import SlurmOptions

    opts = SlurmOptions(**slurm_options("gpu", 30, None, 8, None, ["mem=64G", "qos=high"], []))
    p = opts.parameters(uses_gpu=True, job_name="x")
    assert p["gpus_per_node"] == 1 and p["cpus_per_task"] == 8 and p["time"] == 30 and p["partition"] == "gpu"
    assert p["additional_parameters"] == {"mem": "64G", "qos": "high"} and "account" not in p
    assert "gpus_per_node" not in opts.parameters(uses_gpu=False, job_name="x")
    r = CliRunner().invoke(app, ["run", "suites/quick.yaml", "--executor", "slurm", "--slurm-extra", "--mem=1"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = CliRunner().invoke(app, ["run", "suites/quick.yaml", "--shards", "2"])
    assert r.exit_code == 2 and "--executor local or slurm" in r.output


# --- partition ---------------------------------------------------------------------------------------------

def test_partition_keeps_workloads_whole_and_balances_each_device():
    suite = load_suite(ROOT / "suites" / "scaling.yaml")
    parts = shard_plan.partition(suite, 4)
    assert parts == shard_plan.partition(suite, 4)  # deterministic
    rows = shard_plan.case_rows(suite)
    assert sorted(i for p in parts for i in p) == sorted(rows)  # every case with rows, once
    where = {i: k for k, p in enumerate(parts) for i in p}
    for i in rows:  # the cases measured together (and compared) stay in one shard
        same = [j for j in rows if shard_plan.workload(suite.cases[j]) == shard_plan.workload(suite.cases[i])]
        assert {where[j] for j in same} == {where[i]}
    for device in ("cpu", "cuda"):
        cost = {}
        for i in rows:
            if suite.cases[i].device == device:
                w = shard_plan.workload(suite.cases[i])
                cost[w] = cost.get(w, 0.0) + shard_plan.estimate_s(suite, i, rows[i])
        loads = [sum(shard_plan.estimate_s(suite, i, rows[i]) for i in p if suite.cases[i].device == device)
                 for p in parts]
        best_possible = max(sum(cost.values()) / 4, max(cost.values()))
        assert max(loads) <= 4 / 3 * best_possible + 1e-9, (device, loads)  # the bound of longest-first
    only_cuda = shard_plan.partition(suite, 2, devices=["cuda"])
    assert all(suite.cases[i].device == "cuda" for p in only_cuda for i in p)


# --- device locks -------------------------------------------------------------------------------------------

def _hold(lock_dir, gpu, device, delay, seconds, queue):
    from fffbench.devlock import DeviceLocks

    time.sleep(delay)
    with DeviceLocks(lock_dir, "host", gpu).hold(device):
        start = time.time()
        time.sleep(seconds)
        queue.put((gpu, device, start, time.time()))


def test_device_locks_one_case_per_gpu_and_cpu_cases_alone(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    jobs = [("cpu0", "cpu", 0.0, 0.6), ("g0", "cuda", 0.2, 0.6), ("g1", "cuda", 0.2, 0.6), ("g0", "cuda", 0.25, 0.3)]
    procs = [ctx.Process(target=_hold, args=(tmp_path, g, d, delay, s, q)) for g, d, delay, s in jobs]
    for p in procs:
        p.start()
    got = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    cpu = next(g for g in got if g[1] == "cpu")
    gpus = [g for g in got if g[1] == "cuda"]
    assert all(g[2] >= cpu[3] for g in gpus)  # GPU cases waited for the CPU case (it holds the host)
    g0 = sorted(g[2:] for g in gpus if g[0] == "g0")
    assert g0[1][0] >= g0[0][1]  # never two cases on one GPU
    g1 = next(g for g in gpus if g[0] == "g1")
    assert any(g1[2] < b and a < g1[3] for a, b in g0)  # different GPUs measure in parallel


# --- machines of one run --------------------------------------------------------------------------------

def _two_host_run(root: Path, replicate: bool = True) -> Path:
    """A sharded run whose two shards ran on two machines (host b twice as slow); rows written
    through the real store, as a Slurm run over two nodes would leave them. Replicated: both ran
    the same cases; else host b ran other batch sizes (a split run: nothing to compare)."""
    from types import SimpleNamespace

    import numpy as np
    from synthetic import _row

    from fffbench.layers import FF, FFF

    suite = SimpleNamespace(text="name: two\n", name="two", path="two.yaml", sha256="0" * 64)
    top = RunStore.create(root, "two-hosts", {"host": "login", "machine": "login node", "argv": ["fffbench"]}, suite)
    rng = np.random.default_rng(0)
    shards = []
    for k, (host, slow) in enumerate((("node-a", 1.0), ("node-b", 2.0))):
        env = {"host": host, "machine": f"Xeon {host} + H200", "cpu": {"model": "Xeon", "logical_cores": 8},
               "versions": {"python": "3"}, "shard": {"index": k, "gpu_index": "0", "gpu_uuid": f"GPU-{k}"}}
        store = RunStore.create(root / "two-hosts" / "shards", "two-hosts", env, suite, dirname=f"shard-{k:03d}")
        case_ids = []
        for layer, backend, fam, t in ((FF(width=768, hidden=3072), "ff-dense", "ff", 4e-3),
                                       (FFF(width=768, depth=11, trees=1), "fff-cuda", "fff", 2e-4)):
            samples = list(t * slow * np.exp(rng.normal(0, 0.01, 15)))
            batch = 16384 if replicate or k == 0 else 1024
            row = _row("two-hosts", layer, batch, "cuda", backend, fam, "optimized", "cuda-events/warm-l2/eager",
                       samples) | {"host": host, "shard": k, "device_uuid": f"GPU-{k}",
                                   "started_at": f"2026-01-01T00:00:0{2 * len(case_ids)}.000+00:00",
                                   "finished_at": f"2026-01-01T00:00:0{2 * len(case_ids) + 1}.000+00:00"}
            store.append(row, samples)
            case_ids.append(row["case_id"])
        shards.append({"index": k, "dir": f"shards/shard-{k:03d}", "cases": [0, 1], "case_ids": case_ids, "rows": 2,
                       "devices": ["cuda"], "gpu": None, "jobs": [{"job_id": f"7_{k}", "executor": "slurm"}]})
    shard_plan.save(top.path, {"version": 1, "run_id": "two-hosts", "executor": "slurm", "n_shards": 2,
                               "replicate": replicate, "options": {}, "shards": shards})
    return top.path


def test_hosts_of_one_run_are_machines_in_report_and_compare(tmp_path):
    run_dir = _two_host_run(tmp_path)
    runs = load(run_dir)
    assert runs.labels == ["two-hosts@node-a", "two-hosts@node-b"]
    assert runs.machine("two-hosts@node-b") == "Xeon node-b + H200"
    assert runs.envs["two-hosts@node-a"]["argv"] == ["fffbench"]  # the run's command, the machine's record
    r = CliRunner().invoke(app, ["report", str(run_dir), "--no-plots", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "node-a" in r.output and "node-b" in r.output
    r = CliRunner().invoke(app, ["compare", str(run_dir), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "two-hosts@node-b (Xeon node-b + H200) against two-hosts@node-a" in table
    assert table.count("slower") >= 2  # host b is twice as slow, with significance
    r = CliRunner().invoke(app, ["shards", str(run_dir)])
    assert r.exit_code == 0 and "node-a cuda:GPU-0" in r.output and "node-b cuda:GPU-1" in r.output
    r = CliRunner().invoke(app, ["merge", str(run_dir)])
    assert r.exit_code == 0 and "merged 4 rows from 2 shard(s) (hosts: node-a, node-b)" in r.output
    assert len(read_jsonl(run_dir / RESULTS)) == 4 and len(load(run_dir).df) == 4


def test_a_split_run_over_two_hosts_reports_each_machine(tmp_path):
    run_dir = _two_host_run(tmp_path, replicate=False)
    runs = load(run_dir)
    assert runs.labels == ["two-hosts@node-a", "two-hosts@node-b"] and len(runs.df) == 4
    assert set(runs.df.loc[runs.df.run == "two-hosts@node-b", "batch"]) == {1024}
    r = CliRunner().invoke(app, ["report", str(run_dir), "--no-plots", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0 and "Xeon node-a + H200" in r.output and "Xeon node-b + H200" in r.output


def test_unsharded_and_old_runs_read_as_before():
    old = ROOT / "results" / "scaling-20261128-122630-vm"
    df = RunStore.open(old).frame()
    assert df[["shard", "device_index", "device_uuid"]].isna().all().all()
    assert load(old).labels == [old.name]
    r = CliRunner().invoke(app, ["compare", str(old)])
    assert r.exit_code == 2 and "at least two" in r.output


def test_the_default_run_path_does_not_import_submitit(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY)
    code = ("import sys\nfrom fffbench.cli import app\n"
            f"app(['run', {str(suite)!r}, '--out', {str(tmp_path / 'r')!r}, '--no-progress', '--no-summary'],"
            " standalone_mode=False)\n"
            "from fffbench import runs\nruns.load(*__import__('pathlib').Path(" + repr(str(tmp_path / "r")) +
            ").iterdir())\nassert not [m for m in sys.modules if m.startswith('submitit')], 'submitit imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr


def test_shards_balance_by_an_earlier_runs_costs(tmp_path):
    """With --costs-from, a workload's cost is what it took before, not the FLOP estimate."""
    suite = parse_suite(TINY.replace("[3, 40]", "[3, 40, 80]"), "tiny.yaml")
    estimate = shard_plan.partition(suite, 2)
    keys = sorted({shard_plan.workload(c) for c in suite.cases}, key=lambda k: k[2])
    # pretend the smallest batch took far longest: it must get a shard to itself
    measured = {keys[0]: 100.0, keys[1]: 1.0, keys[2]: 1.0}
    parts = shard_plan.partition(suite, 2, measured=measured)
    small = {i for i, c in enumerate(suite.cases) if c.batch == 3}
    assert any(set(p) == small for p in parts) and parts != estimate
    run = run_suite(suite, out_root=tmp_path, ceilings=False)
    costs = shard_plan.measured_costs(run.path)
    assert set(costs) == set(keys) and all(v >= 0 for v in costs.values())
