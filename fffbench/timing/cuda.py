"""GPU samples with CUDA events.

One pair of events per sample, recorded on the stream with no host synchronisation inside a
round (a sync per call would add launch latency to every sample); the worker synchronises once
per round, when it collects the round's samples.

- L2 ``warm``: the previous call's data stays in L2 (weights of a few MB usually do); ``flush``:
  a buffer twice the L2 size is overwritten before every sample, outside the events.
- launch ``eager``: the backend's Python and launches run every call, so host overhead shows when
  the GPU work is shorter than the launch path; ``graph``: ``number`` calls captured once in a
  CUDA graph and replayed, which removes launch gaps (what a serving stack would do).
"""
from __future__ import annotations

import time

from fffbench.timing import REWARM_MAX_S, TimingConfig
from fffbench.timing.regime import Regime

#: graph replay is not measured for calls slower than this: launch gaps are then noise
GRAPH_MAX_CALL_S = 0.05


class RegimeNotApplicable(Exception):
    """This (backend, regime) pair is not measured; the message is the reason stored in the row."""


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 64 * 2 ** 20)


def _warm(run, x, cfg: TimingConfig, first_s: float | None = None) -> float:
    """Untimed calls (compilation, autotuning, workspace allocation); returns seconds per call.
    ``first_s``: the duration of a first call already made (else one is made here).

    Synchronised call by call: launches return at once, so an unsynchronised loop would queue a
    launch queue's worth of calls (about a thousand) within ``warmup_s`` and then wait for all of
    them, over ten minutes for a kernel of one second."""
    import torch

    if first_s is None:
        t0 = time.perf_counter()
        run(x)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
    if first_s > 1.0:  # a multi-second call: its own time is the estimate, more warm-up is waste
        return first_s
    t_start, n = time.perf_counter(), 0
    while time.perf_counter() - t_start < cfg.warmup_s or n < 3:
        run(x)
        torch.cuda.synchronize()
        n += 1
    return (time.perf_counter() - t_start) / n


class Sampler:
    """One kernel on the GPU in one regime, warmed up (and captured, for graph replay)."""

    def __init__(self, kernel, x, regime: Regime, cfg: TimingConfig, first_s: float):
        import torch

        self.torch, self.regime = torch, regime
        self.run, self.x = kernel.run, x
        self.per_call_s = _warm(kernel.run, x, cfg, first_s)
        self.flush = (torch.empty(2 * l2_bytes() // 4, dtype=torch.int32, device="cuda")
                      if regime.l2 == "flush" else None)
        self.graphs: dict[int, object] = {}
        if regime.launch == "graph" and self.per_call_s > GRAPH_MAX_CALL_S:
            raise RegimeNotApplicable(f"graph replay not measured: {self.per_call_s * 1e3:.0f} ms per call, "
                                      "launch gaps are noise")

    def _graph(self, number: int):
        """``number`` calls captured once into a graph (captured on first use per ``number``)."""
        torch = self.torch
        if number not in self.graphs:
            graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(number):  # warm the side stream's allocator pool before capture
                    self.run(self.x)
                torch.cuda.synchronize()
                try:
                    with torch.cuda.graph(graph, stream=stream):
                        for _ in range(number):
                            self.run(self.x)
                except Exception as e:
                    raise RegimeNotApplicable(f"CUDA graph capture failed: {type(e).__name__}: {e}") from None
            torch.cuda.current_stream().wait_stream(stream)
            graph.replay()
            torch.cuda.synchronize()
            self.graphs[number] = graph
        return self.graphs[number]

    def prepare(self, number: int) -> None:
        """Capture the graph of ``number`` calls now, outside any round."""
        if self.regime.launch == "graph":
            self._graph(number)

    def rewarm(self) -> None:
        if self.per_call_s < REWARM_MAX_S and self.flush is None:
            self.run(self.x)

    def sample(self, number: int):
        torch = self.torch
        if self.flush is not None:
            number = 1  # a flush between calls averaged together would be inside the sample
            self.flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if self.regime.launch == "graph":
            graph = self._graph(number)
            start.record()
            graph.replay()
        else:
            start.record()
            for _ in range(number):
                self.run(self.x)
        end.record()
        return start, end, number

    def collect(self, tokens) -> list[float]:
        self.torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 / n for s, e, n in tokens]

    def close(self) -> None:
        self.graphs.clear()
        self.run = self.x = self.flush = None
