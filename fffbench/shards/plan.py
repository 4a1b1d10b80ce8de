"""Splitting a suite into shards, and the manifest that records the split.

A shard is a set of whole workloads (every case, backend and regime measured together stays in
one shard, so their ratios stay paired and a case's float64 reference is needed by one shard). The split is a pure function of the suite and the
shard count, so it can be recomputed and checked, and it balances each device's work separately:
every shard gets its share of the GPU cases and of the CPU cases, so GPUs are busy in parallel
instead of one shard holding all the GPU work. Work is estimated from the timing budget per row
and a nominal rate for the case's FLOPs (only a heuristic: it orders and balances, it is not a
prediction).

The manifest, ``RUN_DIR/shards.json``, names each shard's cases (by index in the suite, as
``threads: all`` may resolve to a different case id on another host), its directory, its device
slot and every job submitted for it; only the process that submits writes it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fffbench.store import MANIFEST, RunStore, utc_now
from fffbench.suite import Suite

#: nominal rates (FLOP/s, bytes/s) used only to tell long cases from short ones when balancing
NOMINAL_RATE = {"cpu": 5e10, "cuda": 2e13}
NOMINAL_BANDWIDTH = {"cpu": 1e10, "cuda": 3e12}
#: seconds a worker process costs beyond its measurements (interpreter, imports, CUDA context)
PROCESS_S = {"cpu": 2.5, "cuda": 6.0}
#: seconds per row of the batch per stored row (inputs, reference, gate, untimed first calls): the
#: median of the committed runs' recorded intervals beyond budget and FLOPs (1.2e-4 to 2.7e-4)
PER_BATCH_ROW_S = 1.5e-4
MANIFEST_VERSION = 1


def shard_dir(index: int) -> str:
    return f"shards/shard-{index:03d}"


def case_rows(suite: Suite, devices=None) -> dict[int, int]:
    """Planned rows per case index (cases no backend runs on, or not on ``devices``, are absent)."""
    from fffbench.runner import plan

    index = {id(c): i for i, c in enumerate(suite.cases)}
    out: dict[int, int] = {}
    for task in plan(suite):
        if devices and task.case.device not in devices:
            continue
        i = index[id(task.case)]
        out[i] = out.get(i, 0) + 1
    return out


def estimate_s(suite: Suite, index: int, rows: int) -> float:
    """Rough seconds a case takes, from its FLOPs and bytes: per row and worker process its first
    call, warm-up and budget (or its share of ``min_reps`` calls if longer), each process's start,
    and the work that grows with the batch (inputs, the float64 reference)."""
    from fffbench.casedata import work_of
    from fffbench.vocab import ITEMSIZE

    c, t = suite.cases[index], suite.timing
    dev = c.device if c.device in NOMINAL_RATE else "cpu"
    flops, nbytes = work_of(c, ITEMSIZE[c.dtype])  # an encoder case: all its layers, not one
    call = max(flops / NOMINAL_RATE[dev], nbytes / NOMINAL_BANDWIDTH[dev])
    procs = t.min_processes(c.device)
    per_process = t.warmup_s + call + max(t.budget_s, -(-t.min_reps // procs) * call)
    return rows * procs * per_process + procs * PROCESS_S[dev] + PER_BATCH_ROW_S * c.batch


def workload(case) -> tuple:
    """The cases measured together (and compared with each other) share this key: a shard keeps
    them together, so their ratios stay paired."""
    return (case.device, case.dtype, case.batch, case.width, case.input, case.seed, case.threads)


def measured_costs(run_dir) -> dict[tuple, float]:
    """Seconds each workload took in an earlier run (the spans of its groups' measurements, over
    its regimes), by :func:`workload` key; used to balance a new run of the same suite."""
    import pandas as pd

    df = RunStore.open(run_dir).frame()
    if df.empty or "group" not in df:
        return {}
    df = df.dropna(subset=["started_at", "finished_at", "group"])
    out: dict[tuple, float] = {}
    for _, g in df.groupby(["group", "attempt"], dropna=False):
        r = g.iloc[0]
        span = (pd.to_datetime(g["finished_at"], format="ISO8601").max()
                - pd.to_datetime(g["started_at"], format="ISO8601").min()).total_seconds()
        threads = str(r["case_id"]).rsplit("-t", 1)[-1]  # as the suite says it ("all" stays "all")
        key = (r["device"], r["dtype"], int(r["batch"]), int(r["width"]), r["input"], int(r["seed"]),
               threads if threads == "all" else int(threads))
        out[key] = out.get(key, 0.0) + span
    return out


def partition(suite: Suite, n: int, devices=None, measured: dict | None = None) -> list[list[int]]:
    """Case indices of each of ``n`` shards: whole workloads (all cases measured together), per
    device longest first to the least loaded shard (ties: the shard with less work overall, then
    the lower index). A workload's cost is what it took in an earlier run (``measured``, from
    :func:`measured_costs`) where known, else estimated from its FLOPs and bytes. Deterministic.
    Indices are into the whole suite's cases (``devices`` only leaves cases out), as a shard
    re-reads the suite file."""
    rows = case_rows(suite, devices)
    units: dict[tuple, list[int]] = {}
    for i in sorted(rows):
        units.setdefault(workload(suite.cases[i]), []).append(i)
    shards: list[list[int]] = [[] for _ in range(n)]
    total = [0.0] * n
    measured = measured or {}
    for device in sorted({suite.cases[i].device for i in rows}):
        load = [0.0] * n
        keyed = [(k, u) for k, u in units.items() if k[0] == device]
        mine = [u for _, u in keyed]
        cost = {id(u): measured.get(k) or sum(estimate_s(suite, i, rows[i]) for i in u) for k, u in keyed}
        for u in sorted(mine, key=lambda u: (-cost[id(u)], u[0])):
            k = min(range(n), key=lambda j: (load[j], total[j], j))
            shards[k] += u
            load[k] += cost[id(u)]
            total[k] += cost[id(u)]
    return [sorted(s) for s in shards]


def new_manifest(suite: Suite, run_id: str, n: int, executor: str, slots: list[str | None],
                 options: dict | None = None, devices=None, replicate: bool = False,
                 measured: dict | None = None) -> dict:
    """The manifest of a new sharded run: ``slots[k]`` is shard k's GPU (local executor) or None.
    With ``replicate`` every shard holds every case (the same suite on each machine, to compare them)."""
    rows = case_rows(suite, devices)
    split = [sorted(rows)] * n if replicate else partition(suite, n, devices, measured)
    shards = []
    for k, cases in enumerate(split):
        shards.append({"index": k, "dir": shard_dir(k), "cases": cases,
                       "case_ids": [suite.cases[i].case_id for i in cases],
                       "rows": sum(rows[i] for i in cases),
                       "devices": sorted({suite.cases[i].device for i in cases}),
                       "gpu": slots[k] if k < len(slots) else None, "jobs": []})
    return {"version": MANIFEST_VERSION, "run_id": run_id, "created_at": utc_now(), "executor": executor,
            "n_shards": n, "replicate": replicate, "device_filter": sorted(devices) if devices else None,
            "options": options or {},
            "shards": shards}


def load(run_dir) -> dict:
    p = Path(run_dir) / MANIFEST
    if not p.exists():
        raise FileNotFoundError(f"{run_dir} is not a sharded run (no {MANIFEST})")
    return json.loads(p.read_text())


def save(run_dir, manifest: dict) -> None:
    p = Path(run_dir) / MANIFEST
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, p)


def record_job(manifest: dict, index: int, job_id: str, executor: str, **extra) -> None:
    manifest["shards"][index]["jobs"].append({"job_id": str(job_id), "executor": executor,
                                              "submitted_at": utc_now()} | extra)


def progress(run_dir, manifest: dict) -> list[dict]:
    """Per shard: rows planned and stored, its state (done, partial, not started) and its last job."""
    out = []
    for s in manifest["shards"]:
        done = _done(Path(run_dir) / s["dir"])
        state = "done" if done >= s["rows"] else ("partial" if done else "not started")
        out.append({"index": s["index"], "dir": s["dir"], "rows": s["rows"], "done": done,
                    "missing": max(s["rows"] - done, 0), "state": state, "cases": len(s["cases"]),
                    "gpu": s.get("gpu"), "job": s["jobs"][-1]["job_id"] if s["jobs"] else None})
    return out


def _done(path: Path) -> int:
    """Planned rows of a shard directory that are stored (0 before the shard started)."""
    if not (path / "run.json").exists():
        return 0
    store = RunStore.open(path)
    planned = store.env().get("shard", {}).get("planned") or {}
    done = store.done_ids()
    return sum(len(set(ids) & done) for ids in planned.values()) if planned else len(done)


def missing_cases(run_dir, manifest: dict, index: int) -> list[str]:
    """Case ids of shard ``index`` with a row not stored yet (ids as the shard resolved them)."""
    s = manifest["shards"][index]
    path = Path(run_dir) / s["dir"]
    if not (path / "run.json").exists():
        return list(s["case_ids"])
    store = RunStore.open(path)
    planned = store.env().get("shard", {}).get("planned") or {}
    done = store.done_ids()
    return [case for case, row_ids in planned.items() if set(row_ids) - done]
