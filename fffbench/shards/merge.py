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
import json
import os
import re
from pathlib import Path

import pandas as pd

from fffbench.store import COLUMNS, RESULTS, SAMPLES, RunStore, read_jsonl


def _write_lines(path: Path, objs) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        for o in objs:
            f.write(json.dumps(o, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge(run_dir) -> dict:
    """Write the shards' rows and samples, one line per row id, to the run's top level; returns a
    summary (also recorded in run.json under ``merged``). Safe to repeat: it only ever rewrites the
    merged copies, never a shard's own files."""
    store = RunStore.open(run_dir)
    shards = store.shards()
    if not shards and store.manifest() is None:
        raise FileNotFoundError(f"{run_dir} is not a sharded run (nothing to merge)")
    rows: dict[str, dict] = {r["row_id"]: r for r in read_jsonl(store.path / RESULTS)}
    samples: dict[str, list] = {r["row_id"]: r["samples"] for r in read_jsonl(store.path / SAMPLES)}
    hosts = set()
    for shard in shards:
        for r in shard.rows():
            rows[r["row_id"]] = {k: r.get(k) for k in COLUMNS}
            hosts.add(r.get("host"))
        samples.update(shard.samples())
    _write_lines(store.path / SAMPLES, ({"row_id": k, "samples": v} for k, v in samples.items() if k in rows))
    _write_lines(store.path / RESULTS, rows.values())
    info = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "rows": len(rows),
            "shards": [s.path.name for s in shards], "hosts": sorted(h for h in hosts if h)}
    env = store.env()
    env["merged"] = info
    store.write_env(env)
    return info


def _label(host: str, machine: str, several_per_host: bool) -> str:
    if not several_per_host:
        return str(host)
    gpu = machine.split(" + ", 1)[1] if " + " in str(machine) else "cpu"
    return f"{host}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-')}"


def machines(store: RunStore, df: pd.DataFrame) -> list[tuple[str | None, dict, pd.DataFrame]]:
    """(label suffix, environment record, rows) per machine of a run: one part with suffix None for
    an unsharded run or one measured on a single machine, else one per (host, machine).

    The record of a sharded run's machine is that of its first shard on that host, with the run's
    own id, command line and suite, and the list of shards (each with its GPU) that ran there.
    """
    top = store.env()
    shard_envs = [s.env() for s in store.shards()]
    if not shard_envs:
        return [(None, top, df)]
    keys = list(dict.fromkeys(zip(df["host"], df["machine"])))
    if not keys:
        keys = [(shard_envs[0].get("host"), shard_envs[0].get("machine"))]
    per_host = pd.Series([h for h, _ in keys]).value_counts()
    out = []
    for host, machine in keys:
        envs = [e for e in shard_envs if e.get("host") == host and e.get("machine") == machine]
        envs = envs or [e for e in shard_envs if e.get("machine") == machine] or shard_envs[:1]
        env = dict(envs[0]) | {k: top[k] for k in ("run_id", "argv", "suite", "resumed") if k in top}
        env["shards"] = [{"index": (e.get("shard") or {}).get("index"), "host": e.get("host"),
                          "gpu_index": (e.get("shard") or {}).get("gpu_index"),
                          "gpu_uuid": (e.get("shard") or {}).get("gpu_uuid"),
                          "threads_all": (e.get("shard") or {}).get("threads_all")} for e in envs]
        env["executor"] = (envs[0].get("shard") or {}).get("executor")
        rows = df[(df["host"] == host) & (df["machine"] == machine)] if len(keys) > 1 else df
        suffix = _label(host, machine, per_host.get(host, 0) > 1) if len(keys) > 1 else None
        out.append((suffix, env, rows))
    return out
