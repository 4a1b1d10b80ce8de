"""The timing regime of a row: which timer measured it, the L2 state, the launch mode.

A regime is a value, not a string to re-parse: :class:`Regime` is stored in every row as its
``key`` (``wall/warm`` on the CPU, ``cuda-events/warm-l2/eager`` on a GPU, unchanged from earlier
runs) and read back with :meth:`Regime.parse`. The choices of each axis live here and nowhere
else, so adding a regime means adding a choice here and a timer in this package; the suite
schema reads the choices from this module.
"""
from __future__ import annotations

from dataclasses import dataclass

#: timers by name; each is a module of this package with a ``Sampler`` (see :mod:`fffbench.timing`)
TIMERS = {"wall": "fffbench.timing.cpu", "cuda-events": "fffbench.timing.cuda"}
#: the timer of each device: wall clock on the CPU, CUDA events on a GPU
DEVICE_TIMER = {"cpu": "wall", "cuda": "cuda-events"}
#: L2 state before each sample: left as the previous call left it, or overwritten
L2_STATES = ("warm", "flush")
#: how calls are issued: one Python call each, or replayed from a captured CUDA graph
LAUNCHES = ("eager", "graph")
#: the regime axes a timer measures; the others are fixed at their default
TIMER_AXES = {"wall": (), "cuda-events": ("l2", "launch")}


@dataclass(frozen=True, order=True)
class Regime:
    timer: str = "wall"
    l2: str = "warm"
    launch: str = "eager"

    def __post_init__(self):
        if self.timer not in TIMERS:
            raise ValueError(f"unknown timer {self.timer!r}; expected one of {', '.join(TIMERS)}")
        if self.l2 not in L2_STATES or self.launch not in LAUNCHES:
            raise ValueError(f"unknown regime {self.l2!r}/{self.launch!r}")

    @property
    def is_default(self) -> bool:
        """Warm caches and eager launches: what the paper timed, and the regime of the main tables."""
        return self.l2 == "warm" and self.launch == "eager"

    @property
    def key(self) -> str:
        """The stored form, part of every row id."""
        if self.timer == "wall" and self.is_default:
            return "wall/warm"
        return f"{self.timer}/{self.l2}-l2/{self.launch}"

    @classmethod
    def parse(cls, key) -> Regime:
        """The regime of a stored ``key`` (an empty or unknown key reads as the default wall clock)."""
        parts = str(key or "").split("/")
        timer = parts[0] if parts[0] in TIMERS else "wall"
        l2 = next((p.removesuffix("-l2") for p in parts[1:] if p.removesuffix("-l2") in L2_STATES), "warm")
        launch = next((p for p in parts[1:] if p in LAUNCHES), "eager")
        return cls(timer, l2, launch)

    @property
    def label(self) -> str:
        """How tables name a non-default regime (empty for the default)."""
        if self.is_default:
            return ""
        return ", ".join(p for p in (f"{self.l2} L2" if self.l2 != "warm" else "",
                                     "CUDA graph" if self.launch == "graph" else "") if p)

    @property
    def order(self) -> int:
        """Tables list the default regime first."""
        return (self.l2 != "warm") * 2 + (self.launch != "eager")


def regimes_for(device: str, l2=("warm",), launch=("eager",)) -> list[Regime]:
    """The regimes a case on ``device`` is measured in, given the suite's choices of each axis."""
    timer = DEVICE_TIMER.get(device, "wall")
    axes = TIMER_AXES[timer]
    l2s = l2 if "l2" in axes else ("warm",)
    launches = launch if "launch" in axes else ("eager",)
    return [Regime(timer, a, b) for a in l2s for b in launches]
