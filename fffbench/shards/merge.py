"""A sharded run as one run: merged files for tools that read them directly, and one environment
record per machine for the tables.

Reading a sharded run through :class:`fffbench.store.RunStore` already merges its shards; this
module adds two things. :func:`merge` writes the union of the shards' rows and samples to the top
level of the run directory (``results.jsonl``, ``samples.jsonl``), so anything that reads those
files keeps working. :func:`machines` splits a run measured on several hosts (or several GPU
models) into one part per machine, each with the environment record of a shard that ran there, so
the report shows each machine's tables and environment and ``fffbench compare`` can set the
machines of one run against each other.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd

from fffbench.jsonl import encode, read_lines, write_atomic
from fffbench.store import COLUMNS, RATIOS, RESULTS, SAMPLES, RunStore


def _write_lines(path: Path, objs) -> None:
    write_atomic(path, "".join(encode(o).decode() for o in objs))


def merge(run_dir) -> dict:
    """Write the shards' rows, samples and ratios to the run's top level; returns a summary (also
    recorded in run.json under ``merged``). Safe to repeat: it only ever rewrites the merged
    copies, never a shard's own files. A shard's lines win over earlier merged copies of them."""
    store = RunStore.open(run_dir)
    shards = store.shards()
    if not shards and store.manifest() is None:
        raise FileNotFoundError(f"{run_dir} is not a sharded run (nothing to merge)")
    # keyed by (row id, shard): replicas of a case (--replicate) share its row id
    rows = {(r["row_id"], r.get("shard")): r for r in read_lines(store.path / RESULTS).objects if "row_id" in r}
    samples = {(s["row_id"], s.get("shard"), s.get("attempt"), s.get("process")): s
               for s in read_lines(store.path / SAMPLES).objects if "row_id" in s}
    ratios = {(r.get("ratio_id"), r.get("shard")): r for r in read_lines(store.path / RATIOS).objects}
    hosts = set()
    for shard in shards:
        index = (shard.env().get("shard") or {}).get("index")
        for r in read_lines(shard.path / RESULTS).objects:
            if "row_id" in r:
                rows[(r["row_id"], r.get("shard"))] = {k: r.get(k) for k in COLUMNS}
                hosts.add(r.get("host"))
        for s in read_lines(shard.path / SAMPLES).objects:
            if "row_id" in s:
                s = s | {"shard": s.get("shard", index)}
                samples[(s["row_id"], s["shard"], s.get("attempt"), s.get("process"))] = s
        for r in read_lines(shard.path / RATIOS).objects:
            ratios[(r.get("ratio_id"), index)] = r | {"shard": index}
    _write_lines(store.path / SAMPLES, samples.values())
    _write_lines(store.path / RATIOS, ratios.values())
    _write_lines(store.path / RESULTS, rows.values())
    info = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "rows": len(rows),
            "shards": [s.path.name for s in shards], "hosts": sorted(h for h in hosts if h)}
    store.update_env(merged=info)
    return info


def _label(host: str, machine: str, several_per_host: bool) -> str:
    if not several_per_host:
        return str(host)
    gpu = machine.split(" + ", 1)[1] if " + " in str(machine) else "cpu"
    return f"{host}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-')}"


def machines(store: RunStore, df: pd.DataFrame) -> list[tuple[str | None, dict, pd.DataFrame]]:
    """(label suffix, environment record, rows) per machine of a run: one part with suffix None for
    an unsharded run or one measured on a single machine, else one per (host, machine); in a
    replicated run (every shard ran every case) one per shard, named by its host (and its GPU or
    shard number where a host ran several).

    The record of a sharded run's machine is that of its first shard there, with the run's own id,
    command line and suite, and the list of its shards (each with its GPU).
    """
    top = store.env()
    manifest = store.manifest() or {}
    shard_envs = {(e.get("shard") or {}).get("index"): e for e in (s.env() for s in store.shards())}
    if not shard_envs:
        return [(None, top, df)]
    if manifest.get("replicate"):
        groups = [((k,), [e], df[df["shard"] == k]) for k, e in sorted(shard_envs.items())]
        hosts = pd.Series([e.get("host") for e in shard_envs.values()]).value_counts()
        names = [_replica_label(envs[0], hosts) for _, envs, _ in groups]
    else:
        keys = list(dict.fromkeys(zip(df["host"], df["machine"]))) or [
            (next(iter(shard_envs.values())).get("host"), next(iter(shard_envs.values())).get("machine"))]
        groups = []
        for host, machine in keys:
            envs = [e for e in shard_envs.values() if e.get("host") == host and e.get("machine") == machine]
            envs = envs or [e for e in shard_envs.values() if e.get("machine") == machine]
            groups.append(((host, machine), envs or list(shard_envs.values())[:1],
                           df[(df["host"] == host) & (df["machine"] == machine)]))
        per_host = pd.Series([k[0] for k, _, _ in groups]).value_counts()
        names = [_label(k[0], k[1], per_host.get(k[0], 0) > 1) for k, _, _ in groups]
    if len(groups) == 1:
        return [(None, _record(top, groups[0][1]), df)]
    return [(name, _record(top, envs), rows) for name, (_, envs, rows) in zip(names, groups)]


def _replica_label(env: dict, hosts: pd.Series) -> str:
    host, shard = env.get("host"), env.get("shard") or {}
    if hosts.get(host, 0) <= 1:
        return str(host)
    gpu = shard.get("gpu_index")
    return f"{host}-gpu{gpu}" if gpu is not None else f"{host}-shard{shard.get('index')}"


def _record(top: dict, envs: list[dict]) -> dict:
    env = dict(envs[0]) | {k: top[k] for k in ("run_id", "argv", "suite", "resumed") if k in top}
    env["shards"] = [{"index": (e.get("shard") or {}).get("index"), "host": e.get("host"),
                      "gpu_index": (e.get("shard") or {}).get("gpu_index"),
                      "gpu_uuid": (e.get("shard") or {}).get("gpu_uuid"),
                      "threads_all": (e.get("shard") or {}).get("threads_all")} for e in envs]
    env["executor"] = (envs[0].get("shard") or {}).get("executor")
    return env
