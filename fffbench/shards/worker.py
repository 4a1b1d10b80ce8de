"""One shard, in the process that runs it: a job started by submitit, or this process for
``--executor inline``. Nothing here imports submitit.

A shard is a normal run (:func:`fffbench.session.open_run` and :func:`~fffbench.session.measure_run`)
of its cases into its own directory, ``RUN_DIR/shards/shard-NNN/``, with its own run.json (the
environment of the host it runs on, its placement, its ceilings) and its rows under the whole
run's id. Running a shard whose directory exists resumes it (its stored rows are kept and
skipped), so a re-submitted, requeued or preempted shard never duplicates a row; two processes
on one shard are refused by the shard directory's write lock.

Shards share one reference cache, ``RUN_DIR/cache``: a case's float64 reference is computed once
for the run, whichever shard needs it first (the others find the file), holding the host only
shared, so it never stops another shard's GPU measurement.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

from fffbench.store import RUN_JSON, SUITE_COPY, RunStore
from fffbench.suite import SuiteError, load_suite


def shard_suite(suite, indices):
    """The suite restricted to the cases ``indices``."""
    return dataclasses.replace(suite, cases=tuple(suite.cases[i] for i in indices))


def run_shard(run_dir, index: int, progress: bool = False) -> dict:
    """Measure (or finish) shard ``index`` of the sharded run ``run_dir``; returns a summary."""
    from fffbench.devlock import Placement
    from fffbench.progress import Progress
    from fffbench.runner import plan
    from fffbench.session import measure_run, open_run
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
    sub = shard_suite(suite, spec["cases"])
    host = socket.gethostname()
    placement = Placement.for_shard(index, run_dir / "locks", host, any(c.device != "cpu" for c in sub.cases),
                                    tag=manifest["run_id"])
    info = {"index": index, "of": manifest["n_shards"], "executor": manifest["executor"]} | placement.record()
    if not resume:
        planned: dict[str, list[str]] = {}
        for task in plan(sub):
            planned.setdefault(task.case.case_id, []).append(task.row_id)
        info |= {"cases": spec["cases"], "planned": planned}
    print(f"shard {index}: {len(sub.cases)} cases on {host}, CUDA_VISIBLE_DEVICES="
          f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, {'resuming' if resume else 'starting'}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    store, sub = open_run(sub, resume=resume, run_dir=None if resume else path, run_id=manifest["run_id"],
                          env_extra={"shard": info})
    measure_run(store, sub, placement=placement, progress=Progress(enabled=True, tty=progress),
                cache_dir=run_dir / "cache")
    df = store.frame()
    return {"shard": index, "host": host, "rows": len(df), "statuses": df["status"].value_counts().to_dict()}
