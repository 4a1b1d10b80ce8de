"""The runner: suite -> tasks (one per stored row) -> groups -> measured rows in the store.

A *task* is one (case, backend, regime): one row. Tasks of one workload form a *group*, every
timing regime of it included, measured together in worker processes (:mod:`fffbench.measure`),
so that every ratio a table shows between two of its rows is paired, and a GPU workload pays its
CUDA context once per process rather than once per regime. Per group: backends that cannot run
here become ``skipped`` rows; the float64 reference of each case is made before the group's first
process (which gates) and dropped after it.

Groups take turns: each sweep gives every unfinished group one more worker process, so the
processes of every group are spread over the whole run, not bunched into its own few minutes.
What drifts over the run (another tenant, the host's memory bandwidth) then enters every group's
spread between processes, and so its interval, instead of shifting one group against the next.
When a group needs no more processes its rows are stored, with the suite's declared comparisons
within it as paired ratios. An interrupted run keeps every stored row and every journalled
process; ``resume`` measures only what is missing.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from fffbench import casedata
from fffbench.casedata import ReferenceCache
from fffbench.measure import GroupMeasurement, Member, finish_row, ratio_record
from fffbench.registry import get_backend
from fffbench.routing import RoutingLog
from fffbench.runs import comparison_pairs, where
from fffbench.store import RunStore, utc_now
from fffbench.suite import Case, Suite
from fffbench.timing.regime import Regime, regimes_for
from fffbench.vocab import ITEMSIZE


@dataclass(frozen=True)
class Task:
    case: Case
    backend: str
    regime: Regime

    @property
    def row_id(self) -> str:
        return f"{self.case.case_id}|{self.backend}|{self.regime.key}"


def plan(suite: Suite) -> list[Task]:
    """Every (case, backend, regime) to measure: each backend on the cases of its family and of a
    device it declares (a CUDA-only kernel has no CPU row; a missing GPU is a `skipped` row)."""
    t = suite.timing
    return [Task(c, b, r) for c in suite.cases for b in suite.backends_for_case(c)
            if c.device in get_backend(b).devices for r in regimes_for(c.device, t.l2, t.launch)]


def group_key(task: Task) -> str:
    """The workload a task shares with the rows it is compared with (every regime of it: rows are
    paired within a regime, see :meth:`Runner._pairs`). Encoder cases form groups of their own (a
    BERT and an UltraFastBERT encoder of one shape are paired); a layer's own inputs (norm2, a
    capture) make each model layer a workload of its own."""
    c = task.case
    key = f"{c.device}-{c.dtype}-B{c.batch}-d{c.width}-{c.input}-s{c.seed}-t{c.threads}"
    tag = f"-{hashlib.sha256(c.checkpoint.encode()).hexdigest()[:8]}" if c.checkpoint else ""
    if c.model:
        return key + f"-{c.model}{c.model_layers}-S{c.seq_len}-h{c.heads}{tag}"
    if c.layer_index is not None and casedata.per_layer_input(c.input):
        return key + f"-L{c.layer_index}{tag}"
    return key


def groups(tasks: Iterable[Task]) -> dict[str, list[Task]]:
    """Tasks by group, in the order of their first task."""
    out: dict[str, list[Task]] = {}
    for t in tasks:
        out.setdefault(group_key(t), []).append(t)
    return out


def base_row(task: Task, run_id: str, suite: str, host: str, threads: int) -> dict:
    c, b = task.case, get_backend(task.backend)
    layer = c.layer
    flops, nbytes = casedata.work_of(c, ITEMSIZE[c.dtype])
    row = asdict(c) | {"threads": threads}
    row.update(run_id=run_id, row_id=task.row_id, case_id=c.case_id, suite=suite,
               neurons_total=layer.neurons_total, neurons_used=layer.neurons_used, backend=b.name,
               backend_family=b.family, level=b.level_on(c.device), regime=task.regime.key,
               timer=task.regime.timer, host=host, flops=flops, bytes=nbytes, group=group_key(task))
    if c.checkpoint or casedata.per_layer_input(c.input):
        row.update(casedata.provenance(c))
    return row


class Runner:
    """Measures tasks into ``store``. ``placement`` (sharded runs, :class:`fffbench.devlock.Placement`)
    makes every group hold its device, and tags rows with the shard and the device."""

    def __init__(self, store: RunStore, suite: Suite, threads_all: int, host: str, refs: ReferenceCache,
                 placement=None, progress=None):
        self.store, self.suite, self.threads_all, self.host = store, suite, threads_all, host
        self.refs, self.placement, self.progress = refs, placement, progress
        self.journal = store.journal()
        self.stored = 0
        self.routing = RoutingLog(store.append_routing, (r["key"] for r in store.routing()))

    def _held(self, what: str, *args):
        return contextlib.nullcontext() if self.placement is None else getattr(self.placement, what)(*args)

    def _store(self, row: dict) -> None:
        row["finished_at"] = row.get("finished_at") or utc_now()
        self.store.append_row(row)
        self.stored += 1
        if self.progress:
            self.progress.row(row)

    def run(self, tasks: list[Task]) -> int:
        """Measure every task of ``tasks`` (all pending); returns the rows stored. Groups take turns,
        except in a sharded run, where each group holds its device for its whole measurement so
        that the shards' measurements on one device never interleave."""
        pending = [g for g in (self._open(gtasks) for gtasks in groups(tasks).values()) if g is not None]
        if self.placement is not None:
            for g in pending:
                self._prepare(g)
                with self._held("hold", g.device):
                    while g.gm.wants_more():
                        self._step(g, held=True)
                self._close(g)
            return self.stored
        planned = sum(g.gm.timing.min_processes(g.device) for g in pending)
        done = 0
        while pending:
            for g in list(pending):
                if g.gm.wants_more():
                    self._step(g)
                    done += 1
                    if self.progress:  # past the plan, at least one more process per group that wants one
                        wanting = sum(1 for p in pending if p.gm.wants_more())
                        self.progress.processes(done, max(planned, done + wanting), beyond=done + wanting > planned)
                if not g.gm.wants_more():  # stored as soon as it is complete
                    pending.remove(g)
                    self._close(g)
        return self.stored

    def _members(self, tasks: list[Task], threads: int) -> list[Member]:
        """The group's rows that can run here; the others are stored as ``skipped`` at once."""
        device = tasks[0].case.device
        tags = self.placement.tags(device) if self.placement is not None else {}
        members = []
        for i, t in enumerate(tasks):
            row = base_row(t, self.store.run_id, self.suite.name, self.host, threads) | tags
            reason = get_backend(t.backend).unavailable_reason(device, t.case.dtype) or \
                casedata.unavailable_reason(t.case)
            if reason:  # never ran: no measurement interval (started_at stays empty)
                self._store(row | {"status": "skipped", "reason": reason})
                continue
            members.append(Member(t, f"m{i}", row))
        return members

    def _open(self, tasks: list[Task]):
        """The group's measurement, ready for its first process (None when no row can run here)."""
        case = tasks[0].case
        threads, device = case.thread_count(self.threads_all), case.device
        members = self._members(tasks, threads)
        if not members:
            return None
        attempt, done = self._resume_state(members)
        pairs = self._pairs(members)
        modules = sorted({get_backend(m.task.backend).module for m in members})
        gm = GroupMeasurement(members, self.suite.timing, device, threads, modules, self.store.append_samples,
                              attempt, done, [(a, b) for a, b, _ in pairs],
                              self.progress.block if self.progress else None, on_final=self._final)
        return _OpenGroup(device, members, pairs, gm)

    def _prepare(self, g: _OpenGroup) -> None:
        """The float64 references the group's gate reads, before its first process."""
        if g.gm.gates:
            with self._held("prepare", g.device):  # host work, beside other shards' GPU measurements
                for m in g.gm.active:
                    m.reference = str(self.refs.ensure(m.task.case, on_walk=self._routing_hook(m)))

    def _step(self, g: _OpenGroup, held: bool = False) -> None:
        """One worker process of the group (``held``: its device is held already, and the references
        made); the references are dropped once the gate has run."""
        gating = g.gm.gates
        if not held:
            self._prepare(g)
        with contextlib.nullcontext() if held else self._held("hold", g.device):
            if not g.started:
                g.started = utc_now()
                for m in g.members:
                    m.row["started_at"] = g.started
            g.gm.step()
            g.ended = utc_now()
        if gating and any(m.processes for m in g.members):  # the gate has run: the references are not read again
            for m in g.members:
                self.refs.discard(m.task.case)

    def _close(self, g: _OpenGroup) -> None:
        """The group's rows, then its declared comparisons as paired ratios."""
        finished, timed = g.ended or utc_now(), []
        for m in g.members:
            if m.final is not None:
                continue  # stored when it was decided
            row, ok = finish_row(m)
            row["attempt"], row["finished_at"] = g.gm.attempt, finished
            self._store(row)
            if ok:
                timed.append(m)
        for m in g.members:
            self.refs.discard(m.task.case)
        # named pairs, then ``best-*`` pairs resolved on the finished rows
        found = [(num, den, comp) for num, den, comp in g.pairs if num in timed and den in timed]
        for num, den, comp in found + self._best_pairs(timed):
            self.store.append_ratio(ratio_record(comp.label, num, den, g.gm.attempt, comp.figure))

    def _routing_hook(self, m: Member):
        """The walk callback that records the routing statistics of the member's case, once per run."""
        c, row = m.task.case, m.row
        fields = {"run_id": self.store.run_id, "case_id": c.case_id, "source": "encoder" if c.model else "layer"}
        fields |= {k: row.get(k) for k in ("model", "checkpoint", "checkpoint_sha256", "input", "input_sha256",
                                           "batch", "width", "depth", "trees", "seed", "seq_len", "model_layers")}
        return self.routing.hook(c, casedata.reference_key(c), fields)

    def _final(self, m: Member) -> None:
        """A row finished without timing (wrong, skipped, error): stored at once."""
        self._store(finish_row(m)[0] | {"finished_at": utc_now()})

    def _resume_state(self, members: list[Member]) -> tuple[str | None, int]:
        """(attempt, processes done) of a measurement of these members that an interruption cut
        short: continued where every member has the same journalled processes, else started anew."""
        attempts = {}
        for (row_id, attempt), lines in self.journal.items():
            if attempt:
                attempts.setdefault(attempt, {})[row_id] = lines
        ids = {m.task.row_id for m in members}
        for attempt, by_row in attempts.items():
            if set(by_row) != ids:
                continue
            procs = {frozenset(ln["process"] for ln in lines) for lines in by_row.values()}
            if len(procs) != 1 or not any("gate" in ln for lines in by_row.values() for ln in lines):
                continue
            for m in members:
                m.processes = sorted(by_row[m.task.row_id], key=lambda ln: ln["process"])
                gate = next((ln["gate"] for ln in m.processes if "gate" in ln), {})
                m.gate, m.impl = gate or {}, m.processes[-1].get("impl", "")
            return attempt, max(next(iter(procs))) + 1
        return None, 0

    def _declared(self, members: list[Member]):
        device = members[0].task.case.device
        return [c for c in self.suite.comparisons if c.device in (None, device)]

    def _pairs(self, members: list[Member]):
        """(numerator, denominator, comparison) of every declared comparison naming two backends,
        within each regime of the group (known before measuring)."""
        return self._declared_pairs(members, best=False)

    def _best_pairs(self, timed: list[Member]):
        """The same for comparisons naming ``best-*`` sides, resolved on the finished rows."""
        return self._declared_pairs(timed, best=True)

    def _declared_pairs(self, members: list[Member], best: bool):
        out = []
        for regime_members in _by_regime(members):
            rows = [(finish_row(m)[0] if best else m.row | {"status": "ok"}) | {"_m": m} for m in regime_members]
            for comp in self._declared(regime_members):
                if (comp.numerator.startswith("best-") or comp.denominator.startswith("best-")) != best:
                    continue
                for num, den, *_ in comparison_pairs(comp, where(rows, status="ok")):
                    if num is not None and den is not None:
                        out.append((num["_m"], den["_m"], comp))
        return out


@dataclass
class _OpenGroup:
    """A group between its first process and its rows: what :meth:`Runner._step` and
    :meth:`Runner._close` need."""

    device: str
    members: list[Member]
    pairs: list
    gm: GroupMeasurement
    started: str = field(default="")
    #: when its last process ended, taken while the device was still held: the measurement's end,
    #: so that an interval never reaches into the next holder's
    ended: str = field(default="")


def _by_regime(members: list[Member]) -> list[list[Member]]:
    """The members of each regime, in order of first appearance: rows are compared within a regime."""
    out: dict[str, list[Member]] = {}
    for m in members:
        out.setdefault(m.task.regime.key, []).append(m)
    return list(out.values())


__all__ = ["Runner", "Task", "base_row", "group_key", "groups", "plan"]
