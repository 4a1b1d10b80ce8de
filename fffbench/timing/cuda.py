"""GPU timing with CUDA events.

One pair of events per sample, recorded on the stream with no host synchronisation inside the
loop (a sync per call would add launch latency to every sample); one synchronize at the end.

Regimes, recorded in every row:
- L2 ``warm``: the previous call's data stays in L2 (weights of a few MB usually do);
  ``flush``: a buffer twice the L2 size is overwritten before every sample, outside the events.
- launch ``eager``: the backend's Python and launches run every call, so host overhead shows when
  the GPU work is shorter than the launch path; ``graph``: ``number`` calls captured once in a
  CUDA graph and replayed, which removes launch gaps (what a serving stack would do).
"""
from __future__ import annotations

import time

from fffbench.timing import Timing, TimingConfig, plan_reps

#: graph replay is skipped for calls slower than this: launch gaps are then noise
GRAPH_MAX_CALL_S = 0.05


class RegimeNotApplicable(Exception):
    """This (backend, regime) pair is not measured; the message is the reason stored in the row."""


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 64 * 2 ** 20)


def _warm(run, x, cfg: TimingConfig) -> float:
    """Untimed calls (compilation, autotuning, workspace allocation); returns seconds per call."""
    import torch

    t0 = time.perf_counter()
    run(x)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    if first > 1.0:  # a multi-second call: its own time is the estimate, more warm-up is waste
        return first
    # synchronised call by call: launches return at once, so an unsynchronised loop would queue
    # a launch-queue's worth of calls (about a thousand) within warmup_s and then wait for all of
    # them, over ten minutes for a kernel of one second
    t_start, n = time.perf_counter(), 0
    while time.perf_counter() - t_start < cfg.warmup_s or n < 3:
        run(x)
        torch.cuda.synchronize()
        n += 1
    return (time.perf_counter() - t_start) / n


def time_cuda(kernel, x_native, cfg: TimingConfig, l2: str = "warm", launch: str = "eager") -> Timing:
    import torch

    per_call = _warm(kernel.run, x_native, cfg)
    reps, number = plan_reps(per_call, cfg)
    if l2 == "flush":
        number = 1  # a flush between calls averaged together would be inside the sample
        flush = torch.empty(2 * l2_bytes() // 4, dtype=torch.int32, device="cuda")
    step = lambda: [kernel.run(x_native) for _ in range(number)]
    if launch == "graph":
        if per_call > GRAPH_MAX_CALL_S:
            raise RegimeNotApplicable(f"graph replay not measured: {per_call * 1e3:.0f} ms per call, launch gaps are noise")
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()  # warm the side stream's allocator pool before capture
            torch.cuda.synchronize()
            try:
                with torch.cuda.graph(graph, stream=stream):
                    step()
            except Exception as e:
                raise RegimeNotApplicable(f"CUDA graph capture failed: {type(e).__name__}: {e}") from None
        torch.cuda.current_stream().wait_stream(stream)
        step = graph.replay
        step()
        torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if l2 == "flush":
            flush.zero_()
        starts[i].record()
        step()
        ends[i].record()
    torch.cuda.synchronize()
    samples = tuple(s.elapsed_time(e) / 1e3 / number for s, e in zip(starts, ends))
    return Timing(samples, number, f"cuda-events/{l2}-l2/{launch}", "cuda-event")
