"""Timers. Each returns per-call seconds plus the regime it measured; statistics live in ``stats``."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time one (case, backend).

    ``budget_s`` bounds the timed loop, but at least ``min_reps`` samples are always taken, so a
    call slower than ``budget_s / min_reps`` overruns the budget rather than yielding a one-sample
    "median". ``repetitions`` fixes the count instead (the paper used 250 on CPU). A backend whose
    gate call took longer than ``max_call_s`` is checked but not timed (a `skipped` row says so),
    so one pathological baseline cannot hold a whole sweep for hours.
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


@dataclass(frozen=True)
class Timing:
    samples: tuple[float, ...]   # seconds per call, one entry per sample
    number: int                  # calls averaged into each sample
    regime: str                  # e.g. "wall/warm" or "cuda-events/warm-l2/eager"
    timer: str


def plan_reps(per_call_s: float, cfg: TimingConfig) -> tuple[int, int]:
    """(samples, calls per sample): enough calls per sample to swamp timer overhead, enough samples
    to fill the budget, never fewer than ``min_reps``."""
    per_call_s = max(per_call_s, 1e-9)
    number = max(1, int(cfg.min_sample_s / per_call_s)) if per_call_s < cfg.min_sample_s else 1
    if cfg.repetitions:
        return cfg.repetitions, number
    reps = int(cfg.budget_s / (per_call_s * number))
    return max(cfg.min_reps, min(cfg.max_reps, reps)), number
