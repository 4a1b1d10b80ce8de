"""The result store: ``results/<run-id>/`` with append-only JSON-lines files.

- ``results.jsonl``: one row per (case, backend, regime), long format, every suite axis in columns
  (``impl`` names what a native backend ran on: its BLAS library and compiler build);
- ``samples.jsonl``: the raw per-call seconds of each timed row, keyed by ``row_id``;
- ``run.json``: the environment record, the command line, the suite file's path and hash;
- ``suite.yaml``: a copy of the suite, so ``--resume RUN_DIR`` needs nothing else;
- ``shards.json`` (sharded runs only, see :mod:`fffbench.shards`): which cases each shard holds;
  each shard is itself a run directory under ``shards/shard-NNN/`` with its own ``run.json``
  (the environment of the host it ran on), and reading the run merges them, so a sharded run reads
  like any other.

Each row is one ``write`` of a whole line on a file opened for appending, followed by ``fsync``:
a crash can at worst leave a torn last line, which :func:`read_jsonl` drops, so every finished row
survives and a resumed run recomputes only what is missing. Samples are written before their row,
so a row never exists without its samples.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import pandas as pd

RESULTS, SAMPLES, RUN_JSON, SUITE_COPY = "results.jsonl", "samples.jsonl", "run.json", "suite.yaml"
MANIFEST = "shards.json"
STATUSES = ("ok", "wrong", "skipped", "error")

#: the columns every row carries, in order (schema version 1)
COLUMNS = (
    "run_id", "row_id", "case_id", "suite", "family", "width", "hidden", "depth", "trees", "out_width", "bias",
    "neurons_total", "neurons_used", "batch", "dtype", "device", "input", "seed", "threads",
    "backend", "backend_family", "level", "impl", "regime", "timer", "status", "reason",
    "rel_err", "max_row_err", "path_agreement", "decisive_frac",
    "n_samples", "number", "median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s", "noisy",
    "flops", "bytes", "gflops", "gbps", "host", "started_at", "finished_at",
    # added with sharded runs (absent, i.e. None, in older runs): the shard that measured the row and
    # the physical device it held while measuring (GPU index as the shard saw it in
    # CUDA_VISIBLE_DEVICES, and the GPU's UUID); started_at/finished_at bracket that hold
    "shard", "device_index", "device_uuid",
)
SCHEMA_VERSION = 1


def utc_now() -> str:
    """The timestamp every stored record carries: UTC, milliseconds, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _append_line(path: Path, obj: dict) -> None:
    line = (json.dumps({k: _clean(v) for k, v in obj.items()}, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a crash mid-write) is dropped."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunStore:
    """One run directory. Create with :meth:`create`, reopen with :meth:`open` to resume.

    A sharded run (a ``shards.json`` manifest) reads as the union of its shard directories plus
    any rows stored at the top level (a merged copy, see :func:`fffbench.shards.merge.merge`);
    a row found in a shard wins over its merged copy.
    """

    def __init__(self, path, run_id: str | None = None):
        self.path = Path(path)
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        """The id rows are stored under: the directory's name, or for a shard its whole run's id."""
        return self._run_id or self.path.name

    @classmethod
    def create(cls, root, run_id: str, env: dict, suite, dirname: str | None = None) -> RunStore:
        path = Path(root) / (dirname or run_id)
        path.mkdir(parents=True, exist_ok=False)
        store = cls(path, run_id if dirname else None)
        _write_atomic(path / SUITE_COPY, suite.text)
        store.write_env(env | {"run_id": run_id, "schema_version": SCHEMA_VERSION,
                               "suite": {"name": suite.name, "path": suite.path, "sha256": suite.sha256}})
        return store

    @classmethod
    def open(cls, path) -> RunStore:
        path = Path(path)
        if not (path / RUN_JSON).exists():
            raise FileNotFoundError(f"{path} is not a run directory (no {RUN_JSON})")
        store = cls(path)
        env = store.env()
        if env.get("shard"):  # a shard stores its rows under the id of the run it belongs to
            store._run_id = env.get("run_id")
        return store

    def manifest(self) -> dict | None:
        """The shard manifest of a sharded run, or None."""
        p = self.path / MANIFEST
        return json.loads(p.read_text()) if p.exists() else None

    def shards(self) -> list[RunStore]:
        """The shard directories of a sharded run that have started (an empty list otherwise)."""
        m = self.manifest()
        if not m:
            return []
        return [RunStore.open(self.path / s["dir"]) for s in m["shards"] if (self.path / s["dir"] / RUN_JSON).exists()]

    def env(self) -> dict:
        return json.loads((self.path / RUN_JSON).read_text())

    def write_env(self, env: dict) -> None:
        _write_atomic(self.path / RUN_JSON, json.dumps(env, indent=2, default=str) + "\n")

    def add_resume(self, info: dict) -> None:
        """Record a resumption (its time and environment) in run.json without touching the rest."""
        env = self.env()
        env.setdefault("resumed", []).append(info)
        self.write_env(env)

    def append(self, row: dict, samples=None) -> None:
        if samples is not None:
            _append_line(self.path / SAMPLES, {"row_id": row["row_id"], "samples": list(samples)})
        _append_line(self.path / RESULTS, {k: row.get(k) for k in COLUMNS})

    def rows(self) -> list[dict]:
        rows = read_jsonl(self.path / RESULTS)
        for shard in self.shards():
            rows += shard.rows()
        return rows

    def done_ids(self) -> set[str]:
        return {r["row_id"] for r in self.rows()}

    def samples(self) -> dict[str, list[float]]:
        """Raw samples by row id (of a replicated sharded run, where shards share row ids, use :meth:`frame`)."""
        out = {r["row_id"]: r["samples"] for r in read_jsonl(self.path / SAMPLES)}
        for shard in self.shards():
            out.update(shard.samples())
        return out

    def _own_frame(self, samples: bool) -> pd.DataFrame:
        """This directory's rows alone, named by the machine of its run.json, with their samples
        (merged samples carry their shard, as replicas of a case share its row id)."""
        df = pd.DataFrame(read_jsonl(self.path / RESULTS), columns=list(COLUMNS))
        df = df.assign(machine=self.env().get("machine"))
        if samples:
            by_id, by_shard = {}, {}
            for line in read_jsonl(self.path / SAMPLES):
                by_id[line["row_id"]] = by_shard[(line["row_id"], line.get("shard"))] = line["samples"]
            df["samples"] = [by_shard.get((r, k), by_id.get(r)) for r, k in zip(df["row_id"], df["shard"])]
        return df

    def frame(self, samples: bool = False) -> pd.DataFrame:
        # each part's rows name the machine of the run.json they were measured under (a shard's own)
        frames = [self._own_frame(samples)] + [s._own_frame(samples) for s in self.shards()]
        df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        # a resumed row replaces an earlier one with the same id (e.g. after a crash mid-case), and a
        # shard's row its merged copy; replicas (the same case in several shards) all stay
        return df.drop_duplicates(["row_id", "shard"], keep="last").reset_index(drop=True)


def load_runs(paths, samples: bool = False) -> pd.DataFrame:
    """One DataFrame from one or several run directories (rows keep their ``run_id``)."""
    frames = [RunStore.open(p).frame(samples=samples) for p in paths]
    if not frames:
        raise ValueError("no run directory given")
    return pd.concat(frames, ignore_index=True)
