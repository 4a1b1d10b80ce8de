"""Wall-clock samples on the CPU.

``time.perf_counter`` is wall time. The reference PyTorch script used ``process_time``, which sums
CPU time over threads and so inflates multi-threaded baselines; fffbench never does that. Thread
counts are pinned by the worker before any kernel is built.
"""
from __future__ import annotations

import time

from fffbench.timing import REWARM_MAX_S, TimingConfig
from fffbench.timing.regime import Regime


class Sampler:
    """One kernel on the CPU, warmed up and ready to be sampled.

    ``first_s`` is the duration of a call already made (the correctness gate's, or the process's
    first call), which serves as the untimed first call (JIT, lazy init, page faults).
    """

    def __init__(self, kernel, x, regime: Regime, cfg: TimingConfig, first_s: float):
        self.run, self.x = kernel.run, x
        per_call, n, t_start = first_s, 0, time.perf_counter()
        # at least one more warm call to estimate the steady state, unless the first took over a second
        while (time.perf_counter() - t_start) < cfg.warmup_s or (n == 0 and first_s < 1.0):
            t = time.perf_counter()
            self.run(x)
            per_call = time.perf_counter() - t
            n += 1
        self.per_call_s = per_call

    def rewarm(self) -> None:
        if self.per_call_s < REWARM_MAX_S:
            self.run(self.x)

    def sample(self, number: int) -> float:
        run, x = self.run, self.x
        t = time.perf_counter()
        for _ in range(number):
            run(x)
        return (time.perf_counter() - t) / number

    def collect(self, tokens) -> list[float]:
        return list(tokens)

    def close(self) -> None:
        self.run = self.x = None
