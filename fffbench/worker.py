"""One worker process: build a group's kernels, check them, and sample them in rounds.

Started by :mod:`fffbench.measure` as ``python -m fffbench.worker``, fresh for every process of a
measurement (as pyperf and asv do), so the layout of memory, the allocator's state and the JIT's
choices vary between processes as they do between runs, and a backend that crashes takes down
this process only. The task arrives as JSON on stdin; events go back as JSON lines on the file
descriptor named by ``--events``, one per step, flushed at once, so the parent knows what was
running when a process dies. SIGINT is ignored here: on Ctrl-C the parent decides and ends us.

Per member (one row: case, backend, regime): build, first call, the correctness gate (when this
process is asked to check: the first process of a measurement), warm-up; then rounds: each round
visits every member once, forwards in even rounds of even processes and backwards otherwise, and
takes the member's block of samples. A block during which other processes or steal time took a
share of a core (:mod:`fffbench.timing.load`) is set aside and re-taken, up to ``retake`` times.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import sys
import time
import traceback


class Events:
    def __init__(self, fd: int):
        self.f = os.fdopen(fd, "w", buffering=1)

    def __call__(self, ev: str, **fields) -> None:
        self.f.write(json.dumps({"ev": ev} | fields, default=float) + "\n")
        self.f.flush()


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    oom = isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
    return f"{'out of memory' if oom else type(e).__name__}: {text}"[:500]


def _pin_threads(n: int) -> None:
    """Pin torch's intra-op pool and every BLAS/OpenMP pool in this process to ``n`` threads."""
    from fffbench.env import pin_threads

    pin_threads(n)


def main(argv=None) -> int:
    args = argparse.ArgumentParser(prog="python -m fffbench.worker").parse_known_args(argv)[1]
    events_fd = int(args[args.index("--events") + 1]) if "--events" in args else 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    task = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in task.get("sys_path", []) if p not in sys.path]
    emit = Events(events_fd)
    for module in task.get("modules", []):
        try:
            importlib.import_module(module)
        except Exception as e:  # a missing plugin module: its backends report themselves unknown
            emit("warning", text=f"cannot import {module}: {_reason(e)}")
    _pin_threads(int(task["threads"]))
    run(task, emit)
    return 0


class _Data:
    """The group's input (one workload: the same rows for every member) and each layer's weights."""

    def __init__(self):
        self.x, self.weights = {}, {}

    def of(self, case):
        from fffbench.casedata import input_key, input_of, weights_key, weights_of

        key = input_key(case)
        if key not in self.x:
            self.x[key] = input_of(case)
        wkey = weights_key(case)
        if wkey not in self.weights:
            self.weights[wkey] = weights_of(case)
        return self.x[key], self.weights[wkey]


def _failed(emit, key: str, e: Exception) -> None:
    if type(e).__name__ == "RegimeNotApplicable":
        emit("skip", key=key, reason=str(e))
    else:
        emit("error", key=key, reason=_reason(e), where=traceback.format_exc(limit=-3)[-1500:])
    _free_device_memory()


def _member(m: dict, data: _Data, cfg, threads: int, emit):
    """Build, first call, gate (when asked), warm-up: the member's sampler, or None when it is
    finished here (wrong, skipped or failed; the events say which)."""
    from fffbench.members import build, check
    from fffbench.suite import Case
    from fffbench.timing import sampler_module
    from fffbench.timing.regime import Regime

    key, case = m["key"], Case(**m["case"])
    emit("begin", key=key, phase="build")
    x, weights = data.of(case)
    kernel = build(case, m["backend"], weights, threads)
    if "torch" in sys.modules:  # a torch backend: its intra-op pool follows the case too
        sys.modules["torch"].set_num_threads(threads)
    xn = kernel.prepare(x)
    emit("begin", key=key, phase="first call")
    t0 = time.perf_counter()
    y = kernel.run(xn)
    kernel.synchronize()
    first_s = time.perf_counter() - t0
    emit("built", key=key, impl=kernel.describe(), first_s=first_s)
    if m.get("reference"):
        emit("begin", key=key, phase="gate")
        chk = check(case, kernel, y, m["reference"])
        emit("gate", key=key, passed=chk.passed, reason=chk.reason, rel_err=chk.rel_err, max_row_err=chk.max_row_err,
             path_agreement=chk.path_agreement, decisive_frac=chk.decisive_frac,
             token_agreement=getattr(chk, "token_agreement", None))
        if not chk.passed:
            return None
    del y
    if cfg.max_call_s and first_s > cfg.max_call_s:
        emit("skip", key=key, reason=f"output checked, not timed: one call took {first_s:.1f} s "
                                     f"(timing.max_call_s is {cfg.max_call_s:g} s)")
        return None
    emit("begin", key=key, phase="warm-up")
    regime = Regime.parse(m["regime"])
    return sampler_module(regime).Sampler(kernel, xn, regime, cfg, first_s)


def run(task: dict, emit) -> None:
    from fffbench.timing import TimingConfig, plan_rounds
    from fffbench.timing.load import LoadProbe

    cfg = TimingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in task["timing"].items()})
    threads, process, data = int(task["threads"]), int(task["process"]), _Data()
    samplers = {}
    for m in task["members"]:
        try:
            sampler = _member(m, data, cfg, threads, emit)
            if sampler is not None:
                samplers[m["key"]] = sampler
        except Exception as e:
            _failed(emit, m["key"], e)
    rounds, plans = plan_rounds({k: s.per_call_s for k, s in samplers.items()}, cfg, int(task["processes"]))
    ready = {}
    for k, s in samplers.items():
        try:
            if hasattr(s, "prepare"):
                s.prepare(plans[k].number)  # e.g. capture the CUDA graph, outside every round
            ready[k] = s
        except Exception as e:
            _failed(emit, k, e)
    probe = LoadProbe() if task.get("device") == "cpu" else None
    order = list(ready)
    for r in range(rounds):
        for k in (order if (process + r) % 2 == 0 else order[::-1]):
            _block(emit, k, r, ready[k], plans[k], cfg, probe)
    emit("done", rounds=rounds)


def _block(emit, key, r, sampler, plan, cfg, probe) -> None:
    """One member's samples in round ``r``: re-warm, take the block, re-take it while disturbed."""
    set_aside, busy = [], 0.0
    for attempt in range(cfg.retake + 1):
        emit("begin", key=key, phase="sample", round=r)
        sampler.rewarm()
        before = probe.snapshot() if probe else None
        tokens = [sampler.sample(plan.number) for _ in range(plan.per_round)]
        after = probe.snapshot() if probe else None
        samples = sampler.collect(tokens)
        disturbed, busy = probe.disturbed(before, after) if probe else (False, 0.0)
        if not disturbed or attempt == cfg.retake:
            break
        set_aside += samples
        time.sleep(0.2)  # let a burst of another tenant's work pass before re-taking
    emit("block", key=key, round=r, number=plan.number, samples=_significant(samples),
         set_aside=_significant(set_aside), disturbed=bool(disturbed), busy_share=busy)


def _significant(samples: list[float]) -> list[float]:
    """Samples to 6 significant digits: finer than either timer resolves (CUDA events about 0.5 us,
    a sample of a 10 us kernel is 9.73666e-05 s), and half the size of a float's full repr in the
    journal (a GPU suite's samples.jsonl runs to tens of MB)."""
    return [float(f"{x:.6g}") for x in samples]


def _free_device_memory():
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
