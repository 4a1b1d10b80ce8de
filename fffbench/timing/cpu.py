"""Wall-clock timing on the CPU.

``time.perf_counter`` is wall time. The reference PyTorch script used ``process_time``, which sums
CPU time over threads and so inflates multi-threaded baselines; fffbench never does that. Thread
counts are pinned by the runner before this is called.
"""
from __future__ import annotations

import time

from fffbench.timing import Timing, TimingConfig, plan_reps


def time_cpu(kernel, x_native, cfg: TimingConfig, first_s: float | None = None) -> Timing:
    """``first_s``: the duration of a call already made (the correctness gate's), which then
    serves as the untimed first call; otherwise one is made here."""
    run = kernel.run
    if first_s is None:
        t0 = time.perf_counter()
        run(x_native)  # first call: JIT, lazy init, page faults; never timed
        first_s = time.perf_counter() - t0
    first = first_s
    per_call, n_warm, t_start = first, 0, time.perf_counter()
    # one more warm call to estimate the steady state, unless the first alone took over a second
    while (time.perf_counter() - t_start) < cfg.warmup_s or (n_warm == 0 and first < 1.0):
        t = time.perf_counter()
        run(x_native)
        per_call = time.perf_counter() - t
        n_warm += 1
    reps, number = plan_reps(per_call, cfg)
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(number):
            run(x_native)
        samples.append((time.perf_counter() - t) / number)
    return Timing(tuple(samples), number, "wall/warm", "perf_counter")
