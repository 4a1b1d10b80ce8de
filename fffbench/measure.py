"""Measuring one group of rows in fresh worker processes, and turning their samples into rows.

A *group* is every row of one workload (batch, width, dtype, device, input, seed, threads) in one
timing regime: the rows that tables compare with each other. Each process of the group
(:mod:`fffbench.worker`) times all of them interleaved in rounds, so every ratio between two of
them is paired within each process, and between-process variance enters every interval because
the processes differ. Processes run one after another, never beside each other.

The first process of a measurement also checks every output against the float64 reference;
rows that fail are stored as ``wrong`` at once and leave the group. A process that dies (a
segfault, an abort, the OOM killer) takes only the row it was running with it: that row becomes
an ``error`` row naming the signal and what the row was doing, and the process is run again
without it. After each process its samples are journalled (``samples.jsonl``), so an interrupted
measurement resumes from the processes it has. ``processes: auto`` adds processes until every
interval is narrower than ``target_ci`` (or the limits say stop).
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from fffbench.timing.stats import paired_ratio, summarize

#: what the correctness gate reports into each row (token_agreement: encoder rows only)
GATE_FIELDS = ("rel_err", "max_row_err", "path_agreement", "decisive_frac", "token_agreement")
#: signals that mean "the run is being stopped", not "the backend crashed"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class Interrupted(KeyboardInterrupt):
    """A worker was stopped from outside (Ctrl-C, SIGTERM): the run is being interrupted."""


@dataclass
class Member:
    """One row of a group: its task, its row record so far, and its samples by process."""

    task: object
    key: str
    row: dict
    reference: str | None = None
    gate: dict = field(default_factory=dict)
    impl: str = ""
    processes: list[dict] = field(default_factory=list)
    final: dict | None = None  # a row that is finished without timing (wrong, skipped, error)


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


class GroupMeasurement:
    """Measure ``members`` (all of one group) in worker processes; see the module docstring."""

    def __init__(self, members: list[Member], timing, device: str, threads: int, modules: list[str],
                 journal, attempt: str | None = None, done_processes: int = 0, pairs=(), progress=None,
                 on_final=None):
        self.members, self.timing, self.device, self.threads = members, timing, device, threads
        self.modules, self.journal, self.pairs, self.progress = modules, journal, list(pairs), progress
        self.on_final = on_final or (lambda m: None)
        self.attempt = attempt or uuid.uuid4().hex[:12]
        self.next_process = done_processes
        self.last_cost: float | None = None  # seconds the last finished process took

    @property
    def active(self) -> list[Member]:
        return [m for m in self.members if m.final is None]

    # --- one worker process -----------------------------------------------------------------------------

    def _task(self, members: list[Member], process: int, gate: bool) -> dict:
        t = self.timing
        timing = {k: (list(v) if isinstance(v, tuple) else v) for k, v in t.__dict__.items()}
        return {"sys_path": sys.path, "modules": self.modules, "device": self.device, "threads": self.threads,
                "process": process, "processes": t.min_processes(self.device), "timing": timing,
                "members": [{"key": m.key, "case": m.task.case.__dict__, "backend": m.task.backend,
                             "regime": m.task.regime.key, "reference": m.reference if gate else None}
                            for m in members]}

    def _spawn(self, task: dict) -> tuple[list[dict], int, str]:
        """Run one worker; returns (its events, its exit status, the tail of its output)."""
        r, w = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([sys.executable, "-m", "fffbench.worker", "--events", str(w)],
                                    stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(w,), env=env)
            os.close(w)
            events = []
            try:
                proc.stdin.write(json.dumps(task, default=str).encode())
                proc.stdin.close()
                with os.fdopen(r, "rb") as f:
                    for line in f:
                        try:
                            ev = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        events.append(ev)
                        if self.progress and ev.get("ev") == "block":
                            self.progress(ev)
                status = proc.wait()
            except BaseException:  # Ctrl-C or SIGTERM here: end the worker, keep what is stored
                proc.kill()
                proc.wait()
                raise
            log.seek(0)
            tail = [ln for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return events, status, (tail[-1].strip()[:300] if tail else "")

    @staticmethod
    def _apply(events: list[dict], by_key: dict) -> tuple[dict | None, bool, dict]:
        """Take a process's events into its members; returns (the last step begun, whether it
        finished, its sample blocks by member)."""
        blocks: dict[str, list[dict]] = {}
        current, done = None, False
        for ev in events:
            kind, m = ev.get("ev"), by_key.get(ev.get("key"))
            if kind == "begin":
                current = ev
            elif kind == "done":
                done = True
            elif m is None:
                continue
            elif kind == "built":
                m.impl = ev.get("impl") or ""
            elif kind == "gate":
                m.gate = {k: ev.get(k) for k in GATE_FIELDS}
                if not ev.get("passed"):
                    m.final = {"status": "wrong", "reason": ev.get("reason") or "failed the correctness gate"}
            elif kind in ("skip", "error"):
                m.final = {"status": "skipped" if kind == "skip" else "error", "reason": ev.get("reason", "")}
            elif kind == "block":
                blocks.setdefault(m.key, []).append(ev)
        return current, done, blocks

    def _run_process(self, gate: bool) -> bool:
        """One process over the active members (again, without a member that crashed it); returns
        whether it finished. Its samples are journalled before this returns."""
        process = self.next_process
        while self.active:
            members = self.active
            by_key = {m.key: m for m in members}
            started = time.time()
            events, status, tail = self._spawn(self._task(members, process, gate))
            current, done, blocks = self._apply(events, by_key)
            for m in members:
                if m.final is not None:
                    self.on_final(m)
            if done and status == 0:
                self._journal(process, [m for m in members if m.final is None], blocks, gate, time.time() - started)
                self.next_process = process + 1
                return True
            if status < 0 and -status in STOP_SIGNALS:
                raise Interrupted(f"worker stopped by {_signal_name(-status)}")
            reason = _crash_reason(status, current, tail)
            culprit = by_key.get((current or {}).get("key"))
            if culprit is None or culprit.final is not None:  # died outside any member: all fail alike
                for m in self.active:
                    m.final = {"status": "error", "reason": reason}
                    self.on_final(m)
                return False
            culprit.final = {"status": "error", "reason": reason}
            self.on_final(culprit)
        return False

    def _journal(self, process: int, members: list[Member], blocks: dict, gate: bool, seconds: float) -> None:
        """One samples.jsonl line per member. A process in which some block stayed disturbed after
        its re-takes is set aside whole (``disturbed``), for every member alike, so the processes
        that count are the same for every row and every ratio stays paired."""
        disturbed = any(b.get("disturbed") for bl in blocks.values() for b in bl)
        for m in members:
            bl = blocks.get(m.key, [])
            samples = [s for b in bl for s in b["samples"]]
            rounds = [b["round"] for b in bl for _ in b["samples"]]
            line = {"row_id": m.task.row_id, "attempt": self.attempt, "group": m.row.get("group"),
                    "process": process, "samples": [] if disturbed else samples, "rounds": [] if disturbed else rounds,
                    "number": bl[0]["number"] if bl else None,
                    "set_aside": [s for b in bl for s in b.get("set_aside", [])], "disturbed": disturbed,
                    "disturbed_samples": samples if disturbed else [], "disturbed_rounds": rounds if disturbed else [],
                    "seconds": round(seconds, 3), "impl": m.impl}
            if gate:
                line["gate"] = m.gate
            if m.row.get("shard") is not None:
                line["shard"] = m.row["shard"]
            self.journal(line)
            m.processes.append(line)

    # --- the measurement ----------------------------------------------------------------------------------

    def widths(self) -> list[float]:
        """Relative half-widths of every active row's interval and every declared pair's ratio."""
        out = []
        for m in self.active:
            s = summarize([p["samples"] for p in m.processes if p["samples"]])
            if s["n_samples"] and math.isfinite(s["ci_high_s"]):
                out.append((s["ci_high_s"] - s["ci_low_s"]) / 2 / s["median_s"])
            else:
                out.append(math.inf)
        for num, den in self.pairs:
            if num.final is None and den.final is None:
                r = paired_ratio(_by_process(num), _by_process(den))
                out.append((r["ci_high"] - r["ci_low"]) / 2 / r["ratio"] if math.isfinite(r["ci_high"]) else math.inf)
        return out

    def clean_processes(self) -> int:
        """Processes that count: those not set aside as disturbed."""
        lines = self.active[0].processes if self.active else []
        return sum(1 for p in lines if not p.get("disturbed"))

    def wants_more(self) -> bool:
        """Whether another process should run: fewer than ``least`` clean ones are in, or an
        interval is still wider than the target and the last process cost at most ``max_process_s``;
        never beyond ``most`` clean ones, and disturbed processes are replaced up to half as many
        again."""
        t = self.timing
        least, most = t.min_processes(self.device), t.most_processes(self.device)
        if not self.active or self.next_process >= most + max(3, most // 2) or self.clean_processes() >= most:
            return False
        if self.last_cost is None or self.clean_processes() < least:
            return True
        return max(self.widths(), default=0.0) > t.target_ci and self.last_cost <= t.max_process_s

    @property
    def gates(self) -> bool:
        """Whether the next process is the first, which checks every output (its references must exist)."""
        return self.next_process == 0 and not any(m.processes for m in self.members)

    def step(self) -> None:
        """One more process (the first one also gates)."""
        started = time.time()
        ok = self._run_process(gate=self.gates)
        self.last_cost = time.time() - started if ok else None

    def run(self) -> None:
        """Processes until :meth:`wants_more` says stop, one after another."""
        while self.wants_more():
            self.step()


def _crash_reason(status: int, current: dict | None, tail: str) -> str:
    """Why a worker died, and what its last member was doing: ``crashed: killed by SIGSEGV while
    first call; last output: Fatal Python error: Segmentation fault``."""
    why = f"killed by {_signal_name(-status)}" if status < 0 else f"exited with status {status}"
    if status < 0 and -status == signal.SIGKILL:
        why += " (out of memory?)"
    phase = (current or {}).get("phase", "starting")
    return (f"crashed: {why} while {phase}" + (f"; last output: {tail}" if tail else ""))[:500]


def _by_process(m: Member) -> dict:
    return {p["process"]: (p["samples"], p["rounds"]) for p in m.processes if p["samples"]}


def finish_row(m: Member) -> tuple[dict, bool]:
    """The row of a member after its processes: (row, whether it was timed)."""
    row = dict(m.row) | m.gate | {"impl": m.impl or m.row.get("impl")}
    if m.final is not None:
        return row | m.final, False
    kept = [p["samples"] for p in m.processes if p["samples"]]
    reason = ""
    if not kept:  # every process was disturbed: the machine never went quiet; say so
        kept = [p["disturbed_samples"] for p in m.processes if p.get("disturbed_samples")]
        reason = "measured while another process or steal time took a core: no quiet process was found"
    if not kept:
        return row | {"status": "error", "reason": "no samples were taken"}, False
    stats = summarize(kept)
    med = stats.pop("median_s")
    aside = sum(len(p.get("set_aside") or []) + len(p.get("disturbed_samples") or []) for p in m.processes)
    row |= stats | {"median_s": med, "status": "ok", "reason": reason, "number": m.processes[0].get("number"),
                    "n_set_aside": aside, "gflops": row["flops"] / med / 1e9, "gbps": row["bytes"] / med / 1e9}
    return row, True


def ratio_record(label: str, num: Member, den: Member, attempt: str, figure: str | None = None) -> dict:
    """A declared comparison's paired ratio, as ``ratios.jsonl`` stores it."""
    r = paired_ratio(_by_process(num), _by_process(den))
    return {"ratio_id": f"{label}|{num.task.row_id}|{den.task.row_id}", "label": label, "figure": figure,
            "numerator": num.task.row_id, "denominator": den.task.row_id, "attempt": attempt,
            "group": num.row.get("group"), "ratio": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
            "n_pairs": r["n_pairs"], "n_processes": r["n_processes"], "interval": r["interval"],
            "mean_ci": r["mean_ci"], "per_process": [r["per_process"][p] for p in sorted(r["per_process"])], "paired": True}
