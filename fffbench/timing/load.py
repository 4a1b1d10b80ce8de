"""Is another tenant using the machine? CPU time of other processes and steal time around a sample.

On a shared machine a co-tenant that takes a core for a while makes a multi-threaded kernel wait
for its slowest thread: one sample then says nothing about the kernel. Linux reports, per clock
tick, how every CPU spent its time (``/proc/stat``), including *steal*: time the hypervisor gave
to another virtual machine. The CPU time other processes used in an interval is the machine's
busy time minus this process's own (``os.times``, all its threads). A sample block is *disturbed*
when other processes and steal together took more than :data:`DISTURBED_SHARE` of one core over
it (with a floor of :data:`MIN_TICKS` ticks, the resolution of the counters). Where ``/proc/stat``
is missing (not Linux) nothing is ever marked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

DISTURBED_SHARE = 0.10
MIN_TICKS = 3


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: int      # ticks all CPUs spent running anything (user, nice, system, irq, softirq)
    steal: int     # ticks taken by the hypervisor for other machines
    own: float     # this process's CPU seconds (all threads)


class LoadProbe:
    def __init__(self, path: str = "/proc/stat"):
        self.path = path
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = os.path.exists(path)

    def snapshot(self) -> Snapshot | None:
        if not self.available:
            return None
        try:
            with open(self.path) as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        t = os.times()
        return Snapshot(time.perf_counter(), v[0] + v[1] + v[2] + v[5] + v[6], v[7] if len(v) > 7 else 0,
                        t.user + t.system)

    def disturbed(self, a: Snapshot | None, b: Snapshot | None) -> tuple[bool, float]:
        """(whether the interval between ``a`` and ``b`` was disturbed, the share of one core that
        other processes and steal took)."""
        if a is None or b is None or b.wall <= a.wall:
            return False, 0.0
        other = (b.busy - a.busy) - (b.own - a.own) * self.hz + (b.steal - a.steal)
        ticks = (b.wall - a.wall) * self.hz
        return other >= max(MIN_TICKS, DISTURBED_SHARE * ticks), max(other, 0.0) / ticks
