"""A run from start to finish: the run directory, the environment record, the ceilings, the
measurement of every pending row, and what an interruption leaves.

:func:`open_run` makes (or reopens, to resume) the run directory and records the environment;
:func:`measure_run` measures the pending rows with :class:`fffbench.runner.Runner`, between the
ceilings measured at the start and at the end; :func:`run_suite` is both, for a run in this
process. Shards (:mod:`fffbench.shards.worker`) call the two halves with their own directory and
placement. The run directory's write lock is held throughout, so a second writer is refused.

``threads: all`` is resolved here, once, to the CPUs this process may use (its affinity), and
recorded in run.json as ``threads_all``; a resumed run keeps the recorded count, so its row ids
and thread counts stay those of the run it finishes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

from fffbench import env as envmod
from fffbench.casedata import ReferenceCache
from fffbench.runner import Runner, plan
from fffbench.store import RESULTS, SAMPLES, RunStore, StoreError, utc_now
from fffbench.suite import Suite, SuiteError

CACHE = "cache"


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM during a run; every finished row (and journalled process) is stored."""

    def __init__(self, store: RunStore, done: int):
        super().__init__(f"interrupted: {done} rows kept in {store.path}")
        self.store, self.done = store, done


class RunAborted(Exception):
    """The harness failed outside any backend (out of memory making a reference, a full disk)."""

    def __init__(self, store: RunStore, done: int, cause: BaseException):
        if isinstance(cause, OSError) and cause.strerror:
            what = f"{cause.filename or store.path}: {cause.strerror}"
        else:
            kind = "out of memory" if isinstance(cause, MemoryError) else type(cause).__name__
            what = f"{kind}: {str(cause).splitlines()[0] if str(cause) else ''}"
        super().__init__(f"run stopped by {what}; {done} rows kept in {store.path}")
        self.store, self.done, self.cause = store, done, cause


def new_run_id(suite: Suite, host: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{suite.name}-{stamp}-{re.sub(r'[^A-Za-z0-9-]', '-', host)[:24]}"


@contextlib.contextmanager
def stopping_on_sigterm():
    """SIGTERM (what a scheduler sends at a time limit) ends the run as Ctrl-C does."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def restrict(suite: Suite, devices) -> Suite:
    if not devices:
        return suite
    return dataclasses.replace(suite, cases=tuple(c for c in suite.cases if c.device in devices))


def open_run(suite: Suite, out_root="results", resume=None, devices=None, *, run_dir=None, run_id=None,
             env_extra: dict | None = None) -> tuple[RunStore, Suite]:
    """(store, the suite restricted to the run's devices) of a new run under ``out_root`` (or
    exactly in ``run_dir``), or of the run ``resume`` reopened with its recorded device filter."""
    if resume is not None:
        store = RunStore.open(resume)
        recorded = store.env()
        sha = (recorded.get("suite") or {}).get("sha256")
        if sha and sha != suite.sha256:
            raise SuiteError(f"{suite.path}:0: differs from the suite of run {store.path} (hash mismatch); "
                             "resume with the run's own suite.yaml")
        if devices is None:
            devices = recorded.get("device_filter")
        return store, restrict(suite, devices)
    environment = envmod.collect() | (env_extra or {})
    if devices:
        environment["device_filter"] = sorted(devices)
    environment["threads_all"] = envmod.cpu_affinity() or 1
    environment["comparisons"] = [c.to_dict() for c in suite.comparisons]
    if run_dir is not None:
        run_dir = Path(run_dir)
        store = RunStore.create(run_dir.parent, run_id or run_dir.name, environment, suite, dirname=run_dir.name)
    else:
        store = RunStore.create(out_root, new_run_id(suite, environment["host"]), environment, suite)
    return store, restrict(suite, devices)


def measure_run(store: RunStore, suite: Suite, *, placement=None, progress=None, ceilings: bool = True,
                cache_dir=None) -> RunStore:
    """Measure every pending row of ``suite`` into ``store`` (holding its write lock); raises
    :class:`RunInterrupted` on Ctrl-C or SIGTERM, :class:`RunAborted` when the harness fails."""
    with store.writing(), stopping_on_sigterm():
        notes = store.repair()
        env = store.env()
        if "ceilings" in env or any((store.path / f).exists() for f in (RESULTS, SAMPLES)):
            store.add_resume({"at": utc_now(), "host": socket.gethostname(), "argv": list(sys.argv),
                              "repairs": notes} | ({"shard": env["shard"]} if env.get("shard") else {}))
        if progress is not None:
            for n in notes:
                progress.note(n)
        threads_all = int(env.get("threads_all") or envmod.cpu_affinity() or 1)
        done = store.done_ids()
        tasks = [t for t in plan(suite) if t.row_id not in done]
        if progress is not None:
            progress.start(store, len(tasks), len(done))
        refs = ReferenceCache(Path(cache_dir) if cache_dir else store.path / CACHE)
        runner = Runner(store, suite, threads_all, socket.gethostname(), refs, placement, progress)
        try:
            if ceilings and "ceilings" not in env and tasks:
                with _held(placement):
                    store.update_env(ceilings=_ceilings(suite, threads_all))
            runner.run(tasks)
            if ceilings and tasks:
                with _held(placement):
                    store.update_env(ceilings_end=_ceilings(suite, threads_all))
        except KeyboardInterrupt:
            raise RunInterrupted(store, len(done) + runner.stored) from None
        except StoreError:
            raise
        except Exception as e:
            raise RunAborted(store, len(done) + runner.stored, e) from e
        if cache_dir is None:
            shutil.rmtree(store.path / CACHE, ignore_errors=True)
    return store


def _held(placement):
    return contextlib.nullcontext() if placement is None else placement.exclusive()


def _ceilings(suite: Suite, threads_all: int) -> dict:
    from fffbench.ceilings import measure

    cases = suite.cases
    return measure([c.device for c in cases], [c.dtype for c in cases],
                   max((c.thread_count(threads_all) for c in cases), default=1))


def run_suite(suite: Suite, out_root="results", resume=None, devices=None, *, progress=None,
              ceilings: bool = True) -> RunStore:
    """Run (or with ``resume``, finish) ``suite`` in this process; returns the run's store."""
    store, suite = open_run(suite, out_root, resume, devices)
    return measure_run(store, suite, progress=progress, ceilings=ceilings)


__all__ = ["RunAborted", "RunInterrupted", "measure_run", "new_run_id", "open_run", "run_suite"]
