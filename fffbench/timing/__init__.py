"""How rows are timed: the suite's timing settings, the plan of samples a worker process takes,
and the timers (one module per timer, chosen through :mod:`fffbench.timing.regime`).

A measurement is split over several worker processes (see :mod:`fffbench.measure`), because most
of the variance of a timing is between processes (memory layout, page placement, the JIT's and the
allocator's choices) and between moments (other tenants), not within one process. Inside a process
every row of a group is sampled in *rounds*, each round visiting every row once in alternating
order, so any two rows of the group are paired: their ratio is formed round by round, and what
slows the machine for a while slows both sides of a pair alike.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

from fffbench.timing.regime import Regime


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time one (case, backend, regime).

    ``budget_s`` is the timed seconds per row in each worker process; at least ``min_reps``
    samples are taken over all processes, so a call slower than the budget overruns it rather than
    yielding no sample. ``repetitions`` fixes the number of samples per row instead (split over
    the processes; the paper used 250 on CPU). ``processes`` worker processes measure each row:
    ``auto`` starts with :data:`MIN_PROCESSES` of the device and adds processes, up to
    ``max_processes``, while an interval is wider than ``target_ci`` (relative half-width) and one
    more process costs at most ``max_process_s``. A backend whose first call took longer than
    ``max_call_s`` is checked but not timed (a `skipped` row says so). A sample block disturbed by
    other processes or steal time is re-taken up to ``retake`` times.
    """

    budget_s: float = 1.0
    warmup_s: float = 0.1
    min_reps: int = 3
    max_reps: int = 2000
    repetitions: int | None = None
    min_sample_s: float = 1e-3
    max_call_s: float | None = None
    l2: tuple[str, ...] = field(default=("warm",))
    launch: tuple[str, ...] = field(default=("eager",))
    processes: int | str = "auto"
    max_processes: int = 10
    target_ci: float = 0.03
    max_process_s: float = 60.0
    retake: int = 3

    def min_processes(self, device: str) -> int:
        if isinstance(self.processes, int):
            return self.processes
        return MIN_PROCESSES.get(device, 3)

    def most_processes(self, device: str) -> int:
        if isinstance(self.processes, int):
            return self.processes
        return max(self.max_processes, self.min_processes(device))


#: worker processes per row at least, by device (``processes: auto``): three on the CPU, where
#: process-to-process differences dominate; two on a GPU, whose kernels vary far less between
#: processes and where each process pays the CUDA context's start-up
MIN_PROCESSES = {"cpu": 3, "cuda": 2}
#: re-warm (one untimed call) before a row's block in a round when its call is shorter than this:
#: the rows before it in the round have evicted its data, and a short call would time the refill
REWARM_MAX_S = 0.05
#: rounds per process at most: enough pairs per process for a paired ratio, no more
MAX_ROUNDS = 10

#: the ranges the suite reader accepts for each setting (finite, and sane)
RANGES = {"budget_s": (1e-4, 3600.0), "warmup_s": (0.0, 600.0), "min_sample_s": (1e-6, 60.0),
          "max_call_s": (1e-4, 86400.0), "min_reps": (1, 10 ** 6), "max_reps": (1, 10 ** 7),
          "repetitions": (1, 10 ** 6), "processes": (1, 100), "max_processes": (1, 1000),
          "target_ci": (1e-4, 1.0), "max_process_s": (0.0, 86400.0), "retake": (0, 100)}


@dataclass(frozen=True)
class RowPlan:
    """What one process takes of one row: ``per_round`` samples of ``number`` calls in each round."""

    number: int
    per_round: int


def number_for(per_call_s: float, cfg: TimingConfig) -> int:
    """Calls averaged into one sample: enough to swamp the timer's overhead (``min_sample_s``)."""
    per_call_s = max(per_call_s, 1e-9)
    return max(1, int(cfg.min_sample_s / per_call_s)) if per_call_s < cfg.min_sample_s else 1


def plan_rounds(per_call: dict, cfg: TimingConfig, processes: int) -> tuple[int, dict]:
    """(rounds, {row: RowPlan}) for one process of a group whose rows take ``per_call`` seconds.

    Rounds: as many as the slowest row's samples fit in the budget (between 1 and
    :data:`MAX_ROUNDS`). Each row then takes enough samples per round to fill its budget, and at
    least its share of ``min_reps`` (or of ``repetitions``) over the processes.
    """
    if not per_call:
        return 0, {}
    numbers = {k: number_for(t, cfg) for k, t in per_call.items()}
    slowest = max(numbers[k] * max(t, 1e-9) for k, t in per_call.items())
    rounds = max(1, min(MAX_ROUNDS, int(cfg.budget_s / slowest)))
    share = math.ceil((cfg.repetitions or cfg.min_reps) / max(processes, 1))
    plans = {}
    for k, t in per_call.items():
        sample = numbers[k] * max(t, 1e-9)
        total = share if cfg.repetitions else max(share, min(cfg.max_reps, int(cfg.budget_s / sample)))
        plans[k] = RowPlan(numbers[k], max(1, math.ceil(total / rounds)))
    return rounds, plans


def sampler_module(regime: Regime):
    """The timer module of ``regime`` (imported on demand: the CUDA timer imports torch)."""
    from fffbench.timing.regime import TIMERS

    return importlib.import_module(TIMERS[regime.timer])


__all__ = ["MIN_PROCESSES", "RANGES", "Regime", "RowPlan", "TimingConfig", "number_for", "plan_rounds",
           "sampler_module"]
