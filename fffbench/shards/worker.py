"""One shard, in the process that measures it: a job started by submitit, or this process for
``--executor inline``. Nothing here imports submitit.

A shard is a normal run (:func:`fffbench.runner.run_suite`) of its cases into its own directory,
``RUN_DIR/shards/shard-NNN/``, with its own run.json (the environment of the host it runs on, its
placement, its ceilings) and its rows under the whole run's id. Running a shard whose directory
exists resumes it (its stored rows are kept and skipped), so a re-submitted, requeued or preempted
shard never duplicates a row.

``threads: all`` means the CPUs this process may use (its affinity, e.g. a Slurm allocation's
``--cpus-per-task``), resolved once when the shard starts and recorded, so a resumed shard keeps
the same thread count (and the same row ids) even on another node.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path

import yaml

from fffbench.env import cpu_affinity
from fffbench.store import RUN_JSON, SUITE_COPY, RunStore
from fffbench.suite import SuiteError, load_suite

#: fault injection for the tests of the failure path: "K" or "K:N" makes shard K exit abruptly
#: (status 137, as the kernel's OOM killer would) right after storing its N-th row (default 1)
KILL_ENV = "FFFBENCH_TEST_KILL_SHARD"


def _uses_all(suite) -> bool:
    """Whether the suite asks for ``threads: all`` (the parsed cases only hold the resolved count)."""
    try:
        threads = ((yaml.safe_load(suite.text) or {}).get("sweep") or {}).get("threads", "all")
    except yaml.YAMLError:
        return False
    return threads == "all" or (isinstance(threads, list) and "all" in threads)


def shard_suite(suite, indices, threads_all: int):
    """The suite restricted to the cases ``indices``, with ``threads: all`` set to ``threads_all``."""
    resolve = _uses_all(suite) and threads_all != os.cpu_count()
    cases = []
    for i in indices:
        c = suite.cases[i]
        if resolve and c.threads == os.cpu_count():
            c = dataclasses.replace(c, threads=threads_all)
        cases.append(c)
    return dataclasses.replace(suite, cases=tuple(cases))


def _on_row(index: int, echo: bool = True):
    """Print each stored row (the job's log, unless a progress bar shows them), and apply the test
    fault injection if asked for."""
    spec = os.environ.get(KILL_ENV, "")
    target, _, after = spec.partition(":")
    kill_after = int(after or 1) if target.strip() == str(index) else None
    count = {"n": 0}

    def on_row(row):
        count["n"] += 1
        if echo:
            print(f"shard {index}: {row['status']:7s} {row['backend']} {row['case_id']} {row['regime']}",
                  flush=True)
        if kill_after is not None and count["n"] >= kill_after:
            print(f"shard {index}: exiting abruptly ({KILL_ENV}={spec})", file=sys.stderr, flush=True)
            os._exit(137)

    return on_row


def run_shard(run_dir, index: int, progress: bool = False) -> dict:
    """Measure (or finish) shard ``index`` of the sharded run ``run_dir``; returns a summary."""
    from fffbench.devlock import Placement
    from fffbench.runner import plan, run_suite
    from fffbench.shards import plan as shard_plan

    run_dir = Path(run_dir)
    top = RunStore.open(run_dir)
    manifest = shard_plan.load(run_dir)
    spec = manifest["shards"][index]
    suite = load_suite(run_dir / SUITE_COPY)
    recorded_sha = top.env().get("suite", {}).get("sha256")
    if recorded_sha and recorded_sha != suite.sha256:
        raise SuiteError(f"{run_dir / SUITE_COPY}:0: changed since the run started (hash mismatch)")
    path = run_dir / spec["dir"]
    resume = path if (path / RUN_JSON).exists() else None
    before = RunStore.open(path).env().get("shard", {}) if resume else {}
    threads_all = before.get("threads_all") or cpu_affinity() or os.cpu_count() or 1
    sub = shard_suite(suite, spec["cases"], threads_all)
    host = socket.gethostname()
    placement = Placement.for_shard(index, run_dir / "locks", host, any(c.device != "cpu" for c in sub.cases),
                                    tag=manifest["run_id"])
    info = {"index": index, "of": manifest["n_shards"], "executor": manifest["executor"],
            "threads_all": threads_all} | placement.record()
    if not resume:
        planned: dict[str, list[str]] = {}
        for task in plan(sub):
            planned.setdefault(task.case.case_id, []).append(task.row_id)
        info |= {"cases": spec["cases"], "planned": planned}
    print(f"shard {index}: {len(sub.cases)} cases on {host}, CUDA_VISIBLE_DEVICES="
          f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, {'resuming' if resume else 'starting'}", flush=True)
    store = run_suite(sub, resume=resume, progress=progress, on_row=_on_row(index, echo=not progress), run_dir=path,
                      run_id=manifest["run_id"], placement=placement, env_extra={"shard": info})
    df = store.frame()
    return {"shard": index, "host": host, "rows": len(df), "statuses": df["status"].value_counts().to_dict()}
