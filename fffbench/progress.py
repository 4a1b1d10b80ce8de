"""What a run says while it runs: the run directory first, then progress, then what to run next.

On a terminal a progress bar (rich) shows the rows stored, the group being measured and an ETA.
Elsewhere (a CI log, ``nohup``, a pipe) a bar would print nothing useful, so each finished row is
one plain line instead, as pip and pytest do: ``[12/48] ff-d768-... ff-dense wall/warm: ok
812 ms (ETA 3m10s)``. Nothing here measures or decides; the runner calls :meth:`start`,
:meth:`block`, :meth:`row` and :meth:`note`.
"""
from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_text(seconds) -> str:
    """A median for a progress line: ``812 ms``, ``17.3 us``."""
    if seconds is None or seconds != seconds:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


#: without a terminal, a process line at least this often (a group of slow rows, such as the dense
#: Level 1 layers, stores nothing for minutes: one line per process shows the run is alive)
QUIET_S = 20.0


class Progress:
    """Progress of one run on ``stream`` (default stdout): a bar on a terminal, lines elsewhere."""

    def __init__(self, enabled: bool = True, stream=None, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self._procs = (0, 0)  # (worker processes done, planned), as the runner last reported them
        self._last_line = 0.0
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = self.n = 0
        self.t0 = time.time()
        self.bar = self.job = None

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)
        self._last_line = time.time()

    def start(self, store, total: int, done: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.time()
        if not self.enabled:
            return
        already = f" ({done} already stored)" if done else ""
        self._line(f"measuring {total} row{'s' if total != 1 else ''}{already} into {store.path}")
        if self.tty and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), transient=False)
            self.bar.start()
            self.job = self.bar.add_task("starting", total=total, eta="?")

    def eta(self) -> float:
        """From worker processes where the runner reports them: rows of a group are stored together
        after its last process, so a rate of rows says 5 minutes where 30 s remain."""
        done, planned = self._procs
        if done:
            return (time.time() - self.t0) / done * max(planned - done, 0)
        if not self.n:
            return float("nan")
        return (time.time() - self.t0) / self.n * (self.total - self.n)

    def note(self, text: str) -> None:
        """Said even without progress: e.g. what resuming cut off a torn file."""
        self._line(f"note: {text}")

    def processes(self, done: int, planned: int, beyond: bool = False) -> None:
        """A worker process finished; ``planned`` is how many the run needs at least. Groups take
        turns, so rows are stored near the end: until then the ETA comes from the processes.
        ``beyond``: the plan is exceeded (an interval is still wider than the suite's target), so
        the count and the ETA are lower bounds and say so."""
        if not self.enabled:
            return
        self._procs = (done, planned)
        eta = self.eta()
        if self.bar is not None:
            self.bar.update(self.job, description=f"process {done}/{planned}+", eta=duration(eta))
        elif done == planned or done % 10 == 0 or beyond or time.time() - self._last_line > QUIET_S:
            why = ", more while an interval is wider than the suite's target_ci" if beyond else ""
            self._line(f"[process {done}/{planned}+] (ETA {'at least ' if beyond else ''}{duration(eta)}{why})")

    def block(self, ev: dict) -> None:
        if self.bar is not None:
            self.bar.update(self.job, description=f"measuring (round {ev.get('round', 0) + 1})")

    def row(self, row: dict) -> None:
        self.n += 1
        if not self.enabled:
            return
        status = row.get("status")
        what = time_text(row.get("median_s")) if status == "ok" else (row.get("reason") or "")[:80]
        if self.bar is not None:
            self.bar.update(self.job, advance=1, description=f"{row['backend']} {status}", eta=duration(self.eta()))
            return
        self._line(f"[{self.n}/{self.total}] {row['case_id']} {row['backend']} {row['regime']}: {status}"
                   f"{' ' + what if what else ''} (ETA {duration(self.eta())})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def rows_bar(enabled: bool):
    """A plain rich bar of rows stored (for waiting on shard jobs), inert when not ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)
