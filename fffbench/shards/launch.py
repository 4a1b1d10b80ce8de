"""A sharded run from start to merged result, and re-running the shards that did not finish.

:func:`start` creates the run directory (run.json with the submitting host's environment, the
suite copy, the manifest), splits the cases and hands the shards to an executor; :func:`resume`
hands over the unfinished shards of an existing run (or the ones named); :func:`conclude` merges
what the shards stored and says, per failed shard, what is missing and the command that re-runs
that shard alone. Nothing measured by a shard that finished is ever re-run or lost.

Executors: ``inline`` runs shards one after the other in this process (no submitit: e.g. finishing
one shard on a machine without it), ``local`` and ``slurm`` go through :mod:`.submit`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fffbench import env as envmod
from fffbench.shards import plan as shard_plan
from fffbench.shards.slurm import SlurmOptions
from fffbench.store import RunStore

EXECUTORS = ("inline", "local", "slurm")


@dataclass
class Outcome:
    """What happened to the shards handed over: ``failures[k]`` is None for a shard whose job
    returned, else why it failed; ``waited`` is False for ``--no-wait`` submissions."""

    run_dir: Path
    manifest: dict
    executor: str
    shards: list[int]
    failures: dict[int, str | None] = field(default_factory=dict)
    waited: bool = True


def local_gpus(given: list[str] | None = None) -> list[str]:
    """GPUs to spread local shards over: ``given``, else ``CUDA_VISIBLE_DEVICES``, else every GPU
    nvidia-smi lists (integer indices, as ``CUDA_VISIBLE_DEVICES`` takes them)."""
    if given:
        return [g.strip() for g in given if g.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0:
                return [ln.strip() for ln in out.stdout.splitlines() if ln.strip().isdigit()]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


def create(suite, out_root, n: int | None, executor: str, devices=None, gpus: list[str] | None = None,
           slurm: SlurmOptions | None = None, replicate: bool = False, costs_from=None) -> tuple[Path, dict]:
    """A new sharded run directory for ``suite`` under ``out_root`` in ``n`` shards (default: one per
    GPU for the local executor when the suite has CUDA cases, else 1); returns it and its manifest.
    With ``replicate`` each shard runs the whole suite (one replica per GPU or node); with
    ``costs_from`` (an earlier run of the suite) shards are balanced by what each workload took there."""
    from fffbench.session import new_run_id

    rows = shard_plan.case_rows(suite, devices)
    if not rows:
        raise ValueError("the suite has no case to run" + (f" on {', '.join(devices)}" if devices else ""))
    uses_gpu = any(suite.cases[i].device == "cuda" for i in rows)
    slots = local_gpus(gpus) if executor == "local" and uses_gpu else []
    for g in slots:
        if not g.isdigit():
            raise ValueError(f"the local executor needs integer GPU indices, got {g!r} (set --gpus)")
    n = n or max(len(slots), 1)
    n = n if replicate else min(n, len({shard_plan.workload(suite.cases[i]) for i in rows}))
    environment = envmod.collect() | {"executor": executor,
                                       "comparisons": [c.to_dict() for c in suite.comparisons]}
    if devices:
        environment["device_filter"] = sorted(devices)
    measured = shard_plan.measured_costs(costs_from) if costs_from else None
    if costs_from:
        environment["balanced_by"] = str(costs_from)
    store = RunStore.create(out_root, new_run_id(suite, environment["host"]), environment, suite)
    options = {"slurm": dataclasses.asdict(slurm)} if slurm is not None else {}
    manifest = shard_plan.new_manifest(suite, store.run_id, n, executor,
                                       [slots[k % len(slots)] if slots else None for k in range(n)], options, devices,
                                       replicate, measured)
    shard_plan.save(store.path, manifest)
    return store.path, manifest


def start(suite, out_root, n: int | None, executor: str, devices=None, gpus: list[str] | None = None,
          slurm: SlurmOptions | None = None, wait: bool = True, progress: bool = True,
          replicate: bool = False, costs_from=None) -> Outcome:
    """:func:`create` the run, then hand every shard to ``executor``."""
    run_dir, manifest = create(suite, out_root, n, executor, devices, gpus, slurm, replicate, costs_from)
    return run_shards(run_dir, manifest, list(range(manifest["n_shards"])), executor, wait, progress)


def pending(run_dir, manifest: dict, shards: list[int] | None = None) -> list[int]:
    """The shards to hand over again: exactly ``shards`` (checked), else those with rows missing."""
    for k in shards or []:
        if not 0 <= k < manifest["n_shards"]:
            raise ValueError(f"--shard {k}: the run has shards 0..{manifest['n_shards'] - 1}")
    if shards:
        return sorted(set(shards))
    return [p["index"] for p in shard_plan.progress(run_dir, manifest) if p["state"] != "done"]


def resume(run_dir, executor: str | None = None, shards: list[int] | None = None, slurm: dict | None = None,
           wait: bool = True, progress: bool = True) -> Outcome:
    """Hand over again the shards of ``run_dir`` that have rows missing (or exactly ``shards``).
    Each resumes its own directory: stored rows are kept, none is measured twice. ``slurm``: the
    :class:`SlurmOptions` fields to change; the others stay as the run recorded them."""
    run_dir = Path(run_dir)
    manifest = shard_plan.load(run_dir)
    executor = executor or manifest["executor"]
    todo = pending(run_dir, manifest, shards)
    if executor == "slurm":
        recorded = manifest["options"].get("slurm") or {}
        manifest["options"]["slurm"] = dataclasses.asdict(SlurmOptions(**(recorded | (slurm or {}))))
    if not todo:
        return Outcome(run_dir, manifest, executor, [], {}, True)
    return run_shards(run_dir, manifest, todo, executor, wait, progress)


def run_shards(run_dir, manifest: dict, indices: list[int], executor: str, wait: bool, progress: bool) -> Outcome:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    if executor == "inline":
        from fffbench.session import RunAborted
        from fffbench.shards.worker import run_shard

        failures: dict[int, str | None] = {}
        for k in indices:
            shard_plan.record_job(manifest, k, f"pid-{os.getpid()}", "inline")
            shard_plan.save(run_dir, manifest)
            try:
                run_shard(run_dir, k, progress=progress)
                failures[k] = None
            except RunAborted as e:
                failures[k] = str(e)
        return Outcome(Path(run_dir), manifest, executor, indices, failures)
    from fffbench.shards import submit

    jobs = submit.submit(run_dir, manifest, indices, executor)
    if not wait:
        return Outcome(Path(run_dir), manifest, executor, indices, dict.fromkeys(indices), waited=False)
    failures = submit.wait(run_dir, manifest, jobs, progress=progress)
    return Outcome(Path(run_dir), manifest, executor, indices, failures)


def rerun_command(run_dir, index: int, executor: str) -> str:
    return f"fffbench run --resume {run_dir} --shard {index} --executor {executor}"


def conclude(outcome: Outcome) -> list[str]:
    """Merge the stored rows (when the jobs were waited for) and return one line per shard that did
    not finish: why, how many rows and which cases are missing, and the command that re-runs it."""
    from fffbench.shards.merge import merge

    run_dir, manifest = outcome.run_dir, outcome.manifest
    if outcome.waited:
        merge(run_dir)
    lines = []
    for p in shard_plan.progress(run_dir, manifest):
        k = p["index"]
        if not outcome.waited or (k not in outcome.shards and p["state"] == "done"):
            continue
        reason = outcome.failures.get(k)
        if reason is None and p["missing"] == 0:
            continue
        cases = shard_plan.missing_cases(run_dir, manifest, k)
        shown = ", ".join(cases[:3]) + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")
        why = f"failed ({reason})" if reason else "did not finish"
        job = f" [job {p['job']}]" if p["job"] else ""
        lines.append(f"shard {k}{job} {why}: {p['missing']} of {p['rows']} rows missing in {len(cases)} case(s) "
                     f"({shown}); re-run it alone: {rerun_command(run_dir, k, outcome.executor)}")
    return lines
