"""GPU timing with CUDA events.

One pair of events per sample, recorded on the stream with no host synchronisation inside the
loop (a sync per call would add launch latency to every sample); one synchronize at the end. With
``l2="flush"`` a buffer twice the L2 size is overwritten before every sample, outside the events,
so each sample starts with cold caches; ``"warm"`` leaves the previous call's data in L2.
"""
from __future__ import annotations

from fffbench.timing import Timing, TimingConfig, plan_reps


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 64 * 2 ** 20)


def time_cuda(kernel, x_native, cfg: TimingConfig, l2: str = "warm") -> Timing:
    import time

    import torch

    run = kernel.run
    run(x_native)  # compile, autotune, allocate: never timed
    torch.cuda.synchronize()
    t_start, n_warm = time.perf_counter(), 0
    while time.perf_counter() - t_start < cfg.warmup_s or n_warm < 3:
        run(x_native)
        n_warm += 1
    torch.cuda.synchronize()
    per_call = (time.perf_counter() - t_start) / n_warm
    reps, number = plan_reps(per_call, cfg)
    if l2 == "flush":
        number = 1  # a flush between calls averaged together would be inside the sample
        flush = torch.empty(2 * l2_bytes() // 4, dtype=torch.int32, device="cuda")
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if l2 == "flush":
            flush.zero_()
        starts[i].record()
        for _ in range(number):
            run(x_native)
        ends[i].record()
    torch.cuda.synchronize()
    samples = tuple(s.elapsed_time(e) / 1e3 / number for s, e in zip(starts, ends))
    return Timing(samples, number, f"cuda-events/{l2}-l2/eager", "cuda-event")
