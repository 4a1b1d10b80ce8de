"""Shards as submitit jobs: processes on this host (``local``) or Slurm jobs (``slurm``).

Only this module imports submitit, and only the sharded executors import this module, so the
default in-process run needs no submitit. A job is a :class:`ShardJob` (pickled by reference, so
the worker needs fffbench importable, e.g. installed on a shared file system): it runs
:func:`fffbench.shards.worker.run_shard`. It is ``Checkpointable``: on a Slurm time limit or
preemption submitit requeues it, and the requeued job resumes the shard's directory, keeping every
stored row and never duplicating one.

Local jobs get their GPU through submitit's ``visible_gpus`` (``CUDA_VISIBLE_DEVICES`` of the
shard's processes); Slurm jobs of one submission form a job array with ``--gpus-per-node`` GPUs
and ``--cpus-per-task`` CPUs each. Job folders (scripts, pickles, logs) are ``RUN_DIR/local`` and
``RUN_DIR/slurm``.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable

from fffbench.shards import plan as shard_plan
from fffbench.shards.slurm import SlurmOptions
from fffbench.shards.worker import run_shard

#: local jobs have no scheduler's limit; submitit's default (2 minutes) would kill long sweeps
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


class ShardJob(Checkpointable):
    """The callable submitted per shard: measure (or finish) shard ``index`` of ``run_dir``."""

    def __init__(self, run_dir: str, index: int):
        self.run_dir, self.index = str(run_dir), int(index)

    def __call__(self) -> dict:
        return run_shard(self.run_dir, self.index)


def executor(kind: str, run_dir, manifest: dict):
    """A submitit executor for ``kind`` ("local" or "slurm") whose folder is inside the run."""
    folder = Path(run_dir) / kind
    if kind == "local":
        return submitit.LocalExecutor(folder=folder)
    ex = submitit.SlurmExecutor(folder=folder)
    opts = SlurmOptions(**manifest["options"].get("slurm", {}))
    uses_gpu = any("cuda" in s["devices"] for s in manifest["shards"])
    ex.update_parameters(**opts.parameters(uses_gpu, f"fffbench-{manifest['run_id']}"[:64]))
    return ex


def submit(run_dir, manifest: dict, indices: list[int], kind: str) -> dict[int, object]:
    """Submit shards ``indices``; records each job id in the manifest (saved) and returns the jobs."""
    ex = executor(kind, run_dir, manifest)
    jobs = {}
    if kind == "local":
        for k in indices:
            gpu = manifest["shards"][k].get("gpu")
            ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=1 if gpu is not None else 0,
                                 visible_gpus=[int(gpu)] if gpu is not None else ())
            jobs[k] = ex.submit(ShardJob(str(run_dir), k))
            jobs[k]._results_timeout_s = 0  # same file system: a missing result will not appear later
    else:
        with ex.batch():  # one job array for all the shards
            pending = {k: ex.submit(ShardJob(str(run_dir), k)) for k in indices}
        jobs = pending
    for k, job in jobs.items():
        shard_plan.record_job(manifest, k, job.job_id, kind, folder=str(Path(run_dir) / kind))
    shard_plan.save(run_dir, manifest)
    return jobs


def failure(job) -> str | None:
    """Why a finished job failed, in one line (None if it returned): its state where the scheduler
    reports one (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED...), the exception it
    raised, or the last line of its error log when the process died without a result."""
    try:
        job.result()
        return None
    except Exception as e:  # submitit raises FailedJobError / UncompletedJobError with the job's output
        text = str(e)
    state = ""
    with contextlib.suppress(Exception):  # a job whose state the scheduler no longer knows
        state = str(job.state)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= set("-=")]
    # the exception's own line: the last "Type: message" line of the traceback submitit passes on
    detail = next((ln for ln in reversed(lines) if ":" in ln and not ln.startswith("File ")),
                  lines[-1] if lines else "")
    if "has not produced any output" in text:
        log = ""
        with contextlib.suppress(Exception):  # no log file left to read
            log = (job.stderr() or "").strip()
        last = [ln for ln in log.splitlines() if ln.strip()]
        detail = "the process died without a result (killed, out of memory, or exited)" + (
            f"; last log line: {last[-1].strip()[:200]}" if last else "")
    if state and state.upper() not in ("FINISHED", "COMPLETED", "UNKNOWN", "DONE"):
        return f"{state}: {detail}"[:400]
    return detail[:400]


def wait(run_dir, manifest: dict, jobs: dict, progress: bool = True, poll_s: float = 1.0) -> dict[int, str | None]:
    """Wait for ``jobs`` (shard -> job), showing stored rows of the whole run; returns per shard the
    failure (None: the job returned). On Ctrl-C local jobs are stopped (their rows are kept) and
    Slurm jobs left running; KeyboardInterrupt is raised again."""
    from fffbench.progress import rows_bar

    total = sum(s["rows"] for s in manifest["shards"])
    bar = rows_bar(progress)
    try:
        with bar:
            task = bar.add_task(f"{len(jobs)} shard job(s)", total=total)
            while True:
                done = sum(p["done"] for p in shard_plan.progress(run_dir, manifest))
                running = [k for k, j in jobs.items() if not j.done()]
                bar.update(task, completed=done, description=f"{len(running)} of {len(jobs)} shard job(s) running")
                if not running:
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        if all(isinstance(j, submitit.LocalJob) for j in jobs.values()):
            for j in jobs.values():
                j.cancel(check=False)
            deadline = time.time() + 30
            while time.time() < deadline and not all(j.done() for j in jobs.values()):
                time.sleep(0.2)
        raise
    return {k: failure(j) for k, j in jobs.items()}


def job_states(manifest: dict, run_dir) -> dict[int, str]:
    """The scheduler's state of each shard's last Slurm job (best effort: empty where unknown, e.g.
    away from the cluster, where there is no ``sacct`` to ask)."""
    import shutil

    out = {}
    if shutil.which("sacct") is None:
        return out
    for s in manifest["shards"]:
        if not s["jobs"] or s["jobs"][-1]["executor"] != "slurm":
            continue
        with contextlib.suppress(Exception):  # sacct does not know the job (yet, or any more)
            out[s["index"]] = str(submitit.SlurmJob(Path(run_dir) / "slurm", s["jobs"][-1]["job_id"]).state)
    return out
