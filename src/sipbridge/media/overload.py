"""Whether this instance can take another call (sans-I/O).

One event loop carries every call's media. When it cannot keep up, every call suffers at
once (late packets, gaps, growing delay), so the server must refuse *new* calls before
that happens. :class:`LoadMonitor` judges from two figures the runtime feeds it:

- the lag of the shared media clock: how late each wake-up of the clock runs after the
  time it was armed for (``clock_fired(lag, now)``, every wake-up);
- the share of one core the process used over each window (``close_window(now, cpu)``
  when :meth:`clock_fired` says the window is over, with the process's CPU seconds).

A window in which at least ``late_wakeups`` wake-ups ran more than ``max_lag`` late (a
loop that cannot keep up is late again and again; one garbage collection or one slow
callback is late once) or the CPU share exceeded ``max_cpu`` makes the instance
overloaded at once; it takes ``recover_windows`` good
windows in a row to accept calls again (hysteresis, so it does not flap at the edge).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoadLimits", "LoadMonitor", "LoadWindow"]


@dataclass(frozen=True)
class LoadLimits:
    max_lag: float = 0.005  # seconds a media clock wake-up may run late
    late_wakeups: int = 3  # wake-ups later than max_lag in one window that mean overload
    max_cpu: float = 0.85  # share of one core over a window
    window: float = 1.0  # seconds
    recover_windows: int = 2

    def __post_init__(self) -> None:
        if self.max_lag <= 0 or self.window <= 0:
            raise ValueError("max_lag and window must be positive")
        if self.recover_windows < 1 or self.late_wakeups < 1:
            raise ValueError("recover_windows and late_wakeups must be at least 1")
        if not self.max_cpu > 0:
            raise ValueError("max_cpu must be positive")


@dataclass(frozen=True)
class LoadWindow:
    """The figures of one closed window."""

    max_lag: float
    late_wakeups: int
    cpu: float | None  # None for the first window (no CPU figure to compare with yet)
    overloaded: bool


class LoadMonitor:
    """See the module docstring. ``overloaded`` is the verdict for new calls."""

    def __init__(self, limits: LoadLimits | None = None) -> None:
        self.limits = limits if limits is not None else LoadLimits()
        self.overloaded = False
        self.last: LoadWindow | None = None
        self._window_start: float | None = None
        self._cpu_start: float | None = None
        self._max_lag = 0.0
        self._late = 0
        self._good = 0

    def clock_fired(self, lag: float, now: float) -> bool:
        """One wake-up of the media clock, ``lag`` seconds after it was due. True when the
        window is over: then call :meth:`close_window`."""
        if lag > self._max_lag:
            self._max_lag = lag
        if lag > self.limits.max_lag:
            self._late += 1
        if self._window_start is None:
            self._window_start = now
            return False
        return now - self._window_start >= self.limits.window

    def close_window(self, now: float, cpu_seconds: float) -> bool:
        """Close the window at ``now`` with the process's CPU time so far; returns True
        when the verdict changed."""
        limits = self.limits
        cpu: float | None = None
        if self._cpu_start is not None and self._window_start is not None:
            elapsed = now - self._window_start
            if elapsed > 0:
                cpu = (cpu_seconds - self._cpu_start) / elapsed
        bad = self._late >= limits.late_wakeups or (cpu is not None and cpu > limits.max_cpu)
        before = self.overloaded
        if bad:
            self.overloaded = True
            self._good = 0
        elif self.overloaded:
            self._good += 1
            if self._good >= limits.recover_windows:
                self.overloaded = False
                self._good = 0
        self.last = LoadWindow(self._max_lag, self._late, cpu, bad)
        self._window_start = now
        self._cpu_start = cpu_seconds
        self._max_lag = 0.0
        self._late = 0
        return self.overloaded != before
