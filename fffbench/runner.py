"""The runner: suite -> cases -> (build, correctness gate, timing) -> one stored row per result.

Order of work per case: inputs, weights and the float64 reference are made once and shared by all
backends; each backend is built, its output checked, and only a correct backend is timed. Every
finished row is appended to the store at once, so an exception, an OOM or Ctrl-C loses nothing
already measured, and ``resume`` recomputes only the missing rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fffbench import env as envmod
from fffbench.correctness import Reference, check_output
from fffbench.layers import make_input
from fffbench.registry import get_backend
from fffbench.store import RunStore, utc_now
from fffbench.suite import Case, Suite, SuiteError
from fffbench.timing import TimingConfig
from fffbench.timing.stats import summarize

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


class RunInterrupted(Exception):
    """Ctrl-C during a run; every finished row is already stored."""

    def __init__(self, store: RunStore, done: int):
        super().__init__(f"interrupted: {done} rows kept in {store.path}")
        self.store, self.done = store, done


class RunAborted(Exception):
    """The harness failed outside any backend (e.g. out of memory making a reference)."""

    def __init__(self, store: RunStore, done: int, cause: BaseException):
        kind = "out of memory" if _is_oom(cause) else type(cause).__name__
        super().__init__(f"run stopped by {kind}: {str(cause).splitlines()[0] if str(cause) else ''}; "
                         f"{done} rows kept in {store.path}")
        self.store, self.done = store, done


@dataclass(frozen=True)
class Task:
    case: Case
    backend: str
    regime: str

    @property
    def row_id(self) -> str:
        return f"{self.case.case_id}|{self.backend}|{self.regime}"


def regimes(device: str, timing: TimingConfig) -> list[str]:
    """The timing regimes a case is measured in: wall clock on CPU, CUDA events per L2 state on GPU."""
    if device == "cuda":
        return [f"cuda-events/{l2}-l2/{launch}" for l2 in timing.l2 for launch in timing.launch]
    return ["wall/warm"]


def plan(suite: Suite) -> list[Task]:
    """Every (case, backend, regime) to measure: each backend on the cases of its family and of a
    device it declares (a CUDA-only kernel has no CPU row; a missing GPU is a `skipped` row)."""
    return [Task(c, b, r) for c in suite.cases for b in suite.backends_for(c.family)
            if c.device in get_backend(b).devices for r in regimes(c.device, suite.timing)]


@contextlib.contextmanager
def pinned_threads(n: int):
    """Pin torch's intra-op pool and every BLAS/OpenMP pool (threadpoolctl) to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    try:
        import torch
    except ImportError:
        torch = None
    prev = torch.get_num_threads() if torch else None
    with threadpool_limits(limits=n):
        if torch:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(prev)


def new_run_id(suite: Suite, host: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{suite.name}-{stamp}-{re.sub(r'[^A-Za-z0-9-]', '-', host)[:24]}"


def _base_row(task: Task, store: RunStore, suite: Suite, host: str) -> dict:
    c, b = task.case, get_backend(task.backend)
    layer = c.layer
    row = asdict(c)
    row.update(run_id=store.run_id, row_id=task.row_id, case_id=c.case_id, suite=suite.name,
               neurons_total=layer.neurons_total, neurons_used=layer.neurons_used, backend=b.name,
               backend_family=b.family, level=b.level_on(c.device), regime=task.regime, host=host,
               flops=layer.flops(c.batch), bytes=layer.compulsory_bytes(c.batch, ITEMSIZE[c.dtype]),
               started_at=utc_now())
    return row


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def _measure(task: Task, row: dict, data, suite: Suite):
    """Build, gate and time one backend on one case; returns (row, samples or None)."""
    c = task.case
    backend = get_backend(task.backend)
    reason = backend.unavailable_reason(c.device, c.dtype)
    if reason:
        return row | {"status": "skipped", "reason": reason}, None
    x, weights, ref = data()
    try:
        with pinned_threads(c.threads):
            kernel = backend.build(c.layer, weights, device=c.device, dtype=c.dtype, threads=c.threads)
            xn = kernel.prepare(x)
            t0 = time.perf_counter()
            y = kernel.run(xn)
            kernel.synchronize()
            gate_s = time.perf_counter() - t0  # the gate's call is the untimed first call (JIT, init)
            chk = check_output(kernel.to_numpy(y), ref, c.dtype, c.family)
            row["impl"] = kernel.describe()
            del y
            row |= {"rel_err": chk.rel_err, "max_row_err": chk.max_row_err,
                    "path_agreement": chk.path_agreement, "decisive_frac": chk.decisive_frac}
            if not chk.passed:
                return row | {"status": "wrong", "reason": chk.reason}, None
            cap = suite.timing.max_call_s
            if cap and gate_s > cap:
                return row | {"status": "skipped", "reason": f"output checked, not timed: one call took {gate_s:.1f} s "
                                                              f"(timing.max_call_s is {cap:g} s)"}, None
            if c.device == "cuda":
                from fffbench.timing.cuda import RegimeNotApplicable, time_cuda

                _, l2, launch = task.regime.split("/")
                try:
                    t = time_cuda(kernel, xn, suite.timing, l2=l2.removesuffix("-l2"), launch=launch)
                except RegimeNotApplicable as e:
                    return row | {"status": "skipped", "reason": str(e)}, None
            else:
                from fffbench.timing.cpu import time_cpu

                t = time_cpu(kernel, xn, suite.timing, first_s=gate_s)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # a failing backend becomes a row, never a crashed run
        kind = "out of memory" if _is_oom(e) else type(e).__name__
        _free_device_memory()
        return row | {"status": "error", "reason": f"{kind}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}, None
    stats = summarize(t.samples)
    med = stats["median_s"]
    row |= stats | {"status": "ok", "reason": "", "regime": t.regime, "timer": t.timer, "number": t.number,
                    "gflops": row["flops"] / med / 1e9, "gbps": row["bytes"] / med / 1e9}
    return row, t.samples


def _free_device_memory():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _case_data(case: Case):
    """Lazily made (x, weights, reference) for one case, shared by its backends."""
    cache = {}

    def get():
        if not cache:
            layer = case.layer
            weights = layer.init_weights(case.seed)
            x = make_input(case.input, case.batch, case.width, case.seed)
            cache["v"] = (x, weights, Reference.compute(layer, weights, x))
        return cache["v"]

    return get


def run_suite(suite: Suite, out_root="results", resume=None, progress: bool = True, on_row=None,
              ceilings: bool = True, devices: list[str] | None = None, *, run_dir=None, run_id: str | None = None,
              placement=None, env_extra: dict | None = None) -> RunStore:
    """Run every pending (case, backend, regime) of ``suite``; returns the run's store.

    ``resume`` is an existing run directory of the same suite: its finished rows are kept and
    skipped. Raises :class:`RunInterrupted` on Ctrl-C after the finished rows are stored, and
    :class:`RunAborted` when the harness itself fails (a backend's failure is only a row).
    With ``ceilings`` the devices' bandwidth and GEMM rate are measured first (run.json).
    ``devices`` keeps only the cases on those devices (recorded, and reapplied on resume).

    Shards (:mod:`fffbench.shards`) also pass ``run_dir`` (create the run in exactly this
    directory, its rows stored under ``run_id``), ``env_extra`` (recorded in run.json) and
    ``placement`` (:class:`fffbench.devlock.Placement`): every measurement then holds its device
    (``started_at``/``finished_at`` bracket the hold) and its rows record the shard and the device,
    and the ceilings are measured holding every device of the host. Without it nothing is locked.
    """
    environment = envmod.collect() | (env_extra or {})
    if resume and devices is None:
        devices = RunStore.open(resume).env().get("device_filter")
    if devices:
        suite = dataclasses.replace(suite, cases=tuple(c for c in suite.cases if c.device in devices))
        environment["device_filter"] = sorted(devices)
    if ceilings and not resume:
        from fffbench.roofline import measure

        with _held(placement, "exclusive"):
            environment["ceilings"] = measure([c.device for c in suite.cases], [c.dtype for c in suite.cases],
                                              max(c.threads for c in suite.cases))
    if resume:
        store = RunStore.open(resume)
        recorded = store.env().get("suite", {}).get("sha256")
        if recorded and recorded != suite.sha256:
            raise SuiteError(f"{suite.path}:0: differs from the suite of run {store.path} (hash mismatch); "
                             "resume with the run's own suite.yaml")
        store.add_resume({"at": utc_now(), "host": environment["host"], "argv": environment["argv"]} | (env_extra or {}))
    elif run_dir is not None:
        run_dir = Path(run_dir)
        store = RunStore.create(run_dir.parent, run_id or run_dir.name, environment, suite, dirname=run_dir.name)
    else:
        store = RunStore.create(out_root, new_run_id(suite, environment["host"]), environment, suite)
    done = store.done_ids()
    tasks = [t for t in plan(suite) if t.row_id not in done]
    finished = 0
    data_by_case: dict[str, object] = {}
    bar = _progress(progress)
    try:
        with bar:
            job = bar.add_task("starting", total=len(tasks))
            for task in tasks:
                bar.update(job, description=f"{task.case.case_id} [bold]{task.backend}[/]")
                key = task.case.case_id
                if key not in data_by_case:
                    data_by_case.clear()  # keep one case's reference in memory at a time
                    data_by_case[key] = _case_data(task.case)
                device = task.case.device
                if placement is not None and device != "cpu" and _runnable(task):
                    with placement.prepare(device):  # host work (inputs, float64 reference) off the device
                        data_by_case[key]()
                with _held(placement, "hold", device):
                    row = _base_row(task, store, suite, environment["host"])
                    if placement is not None:
                        row |= placement.tags(device)
                    row, samples = _measure(task, row, data_by_case[key], suite)
                    row["finished_at"] = utc_now()
                store.append(row, samples)
                finished += 1
                if on_row:
                    on_row(row)
                bar.advance(job)
    except KeyboardInterrupt:
        raise RunInterrupted(store, len(done) + finished) from None
    except Exception as e:
        raise RunAborted(store, len(done) + finished, e) from e
    return store


def _held(placement, what: str, *args):
    """``placement.<what>(*args)`` (a context holding devices), or nothing when no placement is given."""
    return contextlib.nullcontext() if placement is None else getattr(placement, what)(*args)


def _runnable(task: Task) -> bool:
    c = task.case
    return get_backend(task.backend).unavailable_reason(c.device, c.dtype) is None


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled, transient=False)


__all__ = ["RunAborted", "RunInterrupted", "Task", "pinned_threads", "plan", "regimes", "run_suite"]
