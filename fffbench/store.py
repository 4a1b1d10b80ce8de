"""The result store: ``results/<run-id>/`` with append-only JSON-lines files.

- ``results.jsonl``: one row per (case, backend, regime), long format, every suite axis in columns
  (``impl`` names what a native backend ran on: its BLAS library, build and tuned parameters);
- ``samples.jsonl``: the raw per-call seconds of each timed row, one line per row and worker
  process (``process``, ``rounds``: the round of each sample, ``set_aside``: samples taken while
  another tenant held a core), so each process's samples stay apart and any two rows of one group
  can be paired round by round; written as each process finishes, so an interrupted measurement
  resumes from the processes it has;
- ``ratios.jsonl``: the suite's declared comparisons as paired ratios, with each process's ratio;
- ``routing.jsonl``: routing statistics of each FFF case's weights and inputs (one record per layer
  and input, see :mod:`fffbench.routing`), made with the float64 reference, not timed;
- ``run.json``: the environment record, the command line, the suite file's path and hash, the
  validated comparisons and the measured ceilings (at the start and at the end of the run);
- ``suite.yaml``: a copy of the suite, so ``--resume RUN_DIR`` needs nothing else;
- ``shards.json`` and ``shards/shard-NNN/`` (sharded runs, see :mod:`fffbench.shards`): each shard
  is itself a run directory; reading the run merges them, so a sharded run reads like any other.

Every line is written whole or not at all (:mod:`fffbench.jsonl`); a run directory is built under
a temporary name and renamed into place, so it is a run or nothing; one writer at a time holds
``.lock`` (a second gets one line naming the holder). On resume a torn last line is cut off and
reported before anything is appended, and an ok row whose samples are missing is measured again.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd

from fffbench.jsonl import append_line, cut_torn_tail, read_lines, write_atomic
from fffbench.vocab import STATUSES

RESULTS, SAMPLES, RATIOS, RUN_JSON, SUITE_COPY = "results.jsonl", "samples.jsonl", "ratios.jsonl", "run.json", \
    "suite.yaml"
ROUTING = "routing.jsonl"
MANIFEST, LOCK = "shards.json", ".lock"
__all__ = ["COLUMNS", "MANIFEST", "RATIOS", "RESULTS", "ROUTING", "RUN_JSON", "SAMPLES", "STATUSES", "SUITE_COPY", "RunStore",
           "StoreBusy", "StoreError", "load_runs", "utc_now"]

#: the columns every row carries, in order; rows of older runs read the newer columns as None
COLUMNS = (
    "run_id", "row_id", "case_id", "suite", "family", "width", "hidden", "depth", "trees", "out_width", "bias",
    "neurons_total", "neurons_used", "batch", "dtype", "device", "input", "seed", "threads",
    "backend", "backend_family", "level", "impl", "regime", "timer", "status", "reason",
    "rel_err", "max_row_err", "path_agreement", "decisive_frac",
    "n_samples", "number", "median_s", "iqr_s", "min_s", "mean_s", "std_s", "ci_low_s", "ci_high_s", "noisy",
    "flops", "bytes", "gflops", "gbps", "host", "started_at", "finished_at",
    # sharded runs: the shard that measured the row and the device it held (GPU index as the shard
    # saw it in CUDA_VISIBLE_DEVICES, and the GPU's UUID); started_at/finished_at bracket the hold
    "shard", "device_index", "device_uuid",
    # worker processes (schema 2): how many measured the row, the spread of their medians (standard
    # deviation of the logs), samples set aside as disturbed, and the measurement attempt and group
    # whose samples.jsonl lines hold the samples
    "n_processes", "between_cv", "n_set_aside", "attempt", "group",
    # which interval ci_low_s/ci_high_s are: ``rerun`` (where a second run's estimate lands, the
    # default of several processes) or ``within-process`` (one process's order statistics)
    "interval",
    # the real model: the checkpoint a row's weights (or inputs) came from (as resolved, its size and
    # sha256), the model layer it is, the capture its inputs came from; for an encoder row the model,
    # its shape and the share of its tokens whose output matched the float64 encoder
    "checkpoint", "checkpoint_bytes", "checkpoint_sha256", "layer_index", "input_sha256",
    "model", "seq_len", "model_layers", "heads", "token_agreement",
)
SCHEMA_VERSION = 2


class StoreError(ValueError):
    """A run directory that cannot be read or written; ``str(e)`` names the path and the reason."""


class StoreBusy(StoreError):
    """Another process is writing this run directory."""


def utc_now() -> str:
    """The timestamp every stored record carries: UTC, milliseconds, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: not readable JSON ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object, found a {type(data).__name__}")
    return data


class RunStore:
    """One run directory. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path, run_id: str | None = None):
        self.path = Path(path)
        self._run_id = run_id
        self._lock_fd: int | None = None

    @property
    def run_id(self) -> str:
        """The id rows are stored under: the directory's name, or for a shard its whole run's id."""
        return self._run_id or self.path.name

    # --- making and opening ------------------------------------------------------------------------

    @classmethod
    def create(cls, root, run_id: str, env: dict, suite, dirname: str | None = None) -> RunStore:
        """A new run directory ``root/(dirname or run_id)``, made whole under a temporary name and
        renamed into place (if that name is taken, ``-2``, ``-3``... is appended to the run id)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        name = dirname or run_id
        tmp = root / f".{name}.{os.getpid()}.creating"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            write_atomic(tmp / SUITE_COPY, suite.text)
            for k in range(1, 100):
                final = root / (name if k == 1 else f"{name}-{k}")
                rid = run_id if dirname or k == 1 else f"{run_id}-{k}"
                write_atomic(tmp / RUN_JSON, json.dumps(
                    env | {"run_id": rid, "schema_version": SCHEMA_VERSION,
                           "suite": {"name": suite.name, "path": suite.path, "sha256": suite.sha256}},
                    indent=2, default=str) + "\n")
                if final.exists():
                    continue
                try:
                    os.rename(tmp, final)
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue
                    raise
                return cls(final, rid if dirname else None)
            raise StoreError(f"{root}: 99 run directories named {name} already exist")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def open(cls, path) -> RunStore:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such run directory")
        if not (path / RUN_JSON).exists():
            raise FileNotFoundError(f"{path} is not a run directory (no {RUN_JSON})")
        store = cls(path)
        env = store.env()
        if env.get("shard"):  # a shard stores its rows under the id of the run it belongs to
            store._run_id = env.get("run_id")
        return store

    # --- one writer at a time -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self):
        """Hold this directory's write lock (``fcntl.flock`` on ``.lock``) for the block; a second
        writer gets :class:`StoreBusy` naming the holder. File systems without locks are let through."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "another process"
                raise StoreBusy(f"{self.path} is being written by {holder}; wait for it to finish or stop it") \
                    from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode())
            yield self
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------------------

    def manifest(self) -> dict | None:
        """The shard manifest of a sharded run, or None."""
        p = self.path / MANIFEST
        return _json_file(p) if p.exists() else None

    def shards(self) -> list[RunStore]:
        """The shard directories of a sharded run that have started (an empty list otherwise)."""
        m = self.manifest()
        if not m:
            return []
        try:
            dirs = [s["dir"] for s in m["shards"]]
        except (KeyError, TypeError):
            raise StoreError(f"{self.path / MANIFEST}: not a shard manifest (no shards with a dir)") from None
        return [RunStore.open(self.path / d) for d in dirs if (self.path / d / RUN_JSON).exists()]

    def env(self) -> dict:
        return _json_file(self.path / RUN_JSON)

    def problems(self) -> list[str]:
        """Every line of this directory's files that could not be read, one sentence each."""
        return [p for name in (RESULTS, SAMPLES, RATIOS, ROUTING) for p in read_lines(self.path / name).problems]

    def _own_rows(self) -> list[dict]:
        return [r for r in read_lines(self.path / RESULTS).objects if isinstance(r.get("row_id"), str)]

    def _own_sample_lines(self) -> list[dict]:
        return [s for s in read_lines(self.path / SAMPLES).objects
                if isinstance(s.get("row_id"), str) and isinstance(s.get("samples"), list)]

    def journal(self) -> dict[tuple, list[dict]]:
        """samples.jsonl lines by (row id, attempt), each a process's samples (an unattempted line of
        an older run counts as its row's only process)."""
        out: dict[tuple, list[dict]] = {}
        for s in self._own_sample_lines():
            out.setdefault((s["row_id"], s.get("attempt")), []).append(s)
        return out

    def rows(self) -> list[dict]:
        rows = self._own_rows()
        for shard in self.shards():
            rows += shard.rows()
        return rows

    def complete(self, row: dict, journal: dict) -> bool:
        """Whether a stored row is finished: not ok (final as it is), or ok with its samples."""
        if row.get("status") != "ok":
            return True
        lines = journal.get((row["row_id"], row.get("attempt")), [])
        return len(lines) >= max(int(row.get("n_processes") or 1), 1)

    def done_ids(self) -> set[str]:
        """Row ids that need no measuring: every stored row except ok rows whose samples are missing."""
        journal = self.journal()
        done = {r["row_id"] for r in self._own_rows() if self.complete(r, journal)}
        for shard in self.shards():
            done |= shard.done_ids()
        return done

    def samples(self) -> dict[str, list[float]]:
        """Each row's kept samples over all its processes, by row id."""
        df = self.frame(samples=True)
        return {r: s for r, s in zip(df["row_id"], df["samples"]) if isinstance(s, list)}

    def ratios(self) -> list[dict]:
        out = [r for r in read_lines(self.path / RATIOS).objects if isinstance(r.get("ratio_id"), str)]
        for shard in self.shards():
            out += shard.ratios()
        return out

    def routing(self) -> list[dict]:
        """Routing records (:mod:`fffbench.routing`) of this run and its shards, one per key."""
        out = {r["key"]: r for r in read_lines(self.path / ROUTING).objects if isinstance(r.get("key"), str)}
        for shard in self.shards():
            for r in shard.routing():
                out.setdefault(r["key"], r)
        return list(out.values())

    def _own_frame(self, samples: bool) -> pd.DataFrame:
        """This directory's rows alone, named by the machine of its run.json, with their samples:
        ``samples`` (every kept sample) and ``processes`` (per process: samples and rounds)."""
        df = pd.DataFrame(self._own_rows(), columns=list(COLUMNS))
        df = df.assign(machine=self.env().get("machine"))
        if samples:
            journal = self.journal()
            procs = []
            for row_id, attempt, shard in zip(df["row_id"], df["attempt"], df["shard"]):
                lines = [s for s in journal.get((row_id, attempt if isinstance(attempt, str) else None), [])
                         if s.get("shard") in (None, shard) or shard is None]
                procs.append([{"process": s.get("process", i), "samples": s["samples"],
                               "rounds": s.get("rounds") or [0] * len(s["samples"])} for i, s in enumerate(lines)])
            df["processes"] = [p or None for p in procs]
            df["samples"] = [[x for p in ps for x in p["samples"]] if ps else None for ps in procs]
        return df

    def frame(self, samples: bool = False) -> pd.DataFrame:
        frames = [self._own_frame(samples)] + [s._own_frame(samples) for s in self.shards()]
        df = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        # a resumed row replaces an earlier one with the same id, and a shard's row its merged copy;
        # replicas (the same case in several shards) all stay
        return df.drop_duplicates(["row_id", "shard"], keep="last").reset_index(drop=True)

    # --- writing ---------------------------------------------------------------------------------------

    def write_env(self, env: dict) -> None:
        write_atomic(self.path / RUN_JSON, json.dumps(env, indent=2, default=str) + "\n")

    def update_env(self, **items) -> None:
        """Set keys of run.json without touching the rest (e.g. the ceilings measured at the end)."""
        self.write_env(self.env() | items)

    def add_resume(self, info: dict) -> None:
        """Record a resumption (its time and environment) in run.json."""
        env = self.env()
        env.setdefault("resumed", []).append(info)
        self.write_env(env)

    def repair(self) -> list[str]:
        """Before appending to an existing run: cut torn last lines off, and say what was cut and
        which lines cannot be read (those stay, and are reported again by :meth:`problems`)."""
        notes = []
        for name in (RESULTS, SAMPLES, RATIOS, ROUTING):
            cut = cut_torn_tail(self.path / name)
            if cut:
                notes.append(f"{name}: cut off a torn last line ({cut} bytes; its row is measured again)")
        notes += [p for p in self.problems() if "torn last line" not in p]
        return notes

    def append_row(self, row: dict) -> None:
        append_line(self.path / RESULTS, {k: row.get(k) for k in COLUMNS})

    def append_samples(self, line: dict) -> None:
        append_line(self.path / SAMPLES, line)

    def append_ratio(self, record: dict) -> None:
        append_line(self.path / RATIOS, record)

    def append_routing(self, record: dict) -> None:
        append_line(self.path / ROUTING, record)

    def append(self, row: dict, samples=None) -> None:
        """A row measured in one process, with its samples (written first: a row never exists
        without its samples)."""
        if samples is not None:
            self.append_samples({"row_id": row["row_id"], "attempt": row.get("attempt"), "process": 0,
                                 "samples": list(samples)})
        self.append_row(row)


def load_runs(paths, samples: bool = False) -> pd.DataFrame:
    """One DataFrame from one or several run directories (rows keep their ``run_id``)."""
    frames = [RunStore.open(p).frame(samples=samples) for p in paths]
    if not frames:
        raise ValueError("no run directory given")
    return pd.concat(frames, ignore_index=True)
