"""LoadMonitor: the overload verdict from the media clock's lag and the CPU share."""

from __future__ import annotations

import pytest

from sipbridge.media.overload import LoadLimits, LoadMonitor


def run_window(
    monitor: LoadMonitor, start: float, lags: list[float], cpu_start: float, cpu_share: float
) -> tuple[bool, float]:
    """Feed one second of wake-ups; returns (verdict changed, cpu at the end)."""
    changed = False
    step = 1.0 / len(lags)
    for k, lag in enumerate(lags, start=1):
        now = start + k * step
        if monitor.clock_fired(lag, now):
            changed = monitor.close_window(now, cpu_start + cpu_share * (now - start)) or changed
    return changed, cpu_start + cpu_share


def test_quiet_loop_is_not_overloaded() -> None:
    monitor = LoadMonitor()
    monitor.clock_fired(0.0, 0.0)
    cpu = 0.0
    for second in range(5):
        changed, cpu = run_window(monitor, float(second), [0.0005] * 50, cpu, 0.3)
        assert not changed
    assert not monitor.overloaded
    assert monitor.last is not None and monitor.last.cpu == pytest.approx(0.3, abs=0.02)


def test_one_late_wakeup_is_a_hiccup_not_overload() -> None:
    monitor = LoadMonitor()
    monitor.clock_fired(0.0, 0.0)
    changed, _ = run_window(monitor, 0.0, [0.0005] * 49 + [0.080], 0.0, 0.2)  # a GC pause
    assert not changed and not monitor.overloaded
    assert monitor.last is not None and monitor.last.max_lag == pytest.approx(0.080)


def test_a_loop_that_keeps_running_late_is_overloaded_then_recovers() -> None:
    monitor = LoadMonitor(LoadLimits(max_lag=0.005, recover_windows=2))
    monitor.clock_fired(0.0, 0.0)
    changed, cpu = run_window(monitor, 0.0, [0.0005] * 40 + [0.007] * 10, 0.0, 0.5)
    assert changed and monitor.overloaded
    assert monitor.last is not None and monitor.last.late_wakeups == 10
    changed, cpu = run_window(monitor, 1.0, [0.0005] * 50, cpu, 0.5)
    assert not changed and monitor.overloaded  # one good window is not enough
    changed, cpu = run_window(monitor, 2.0, [0.0005] * 50, cpu, 0.5)
    assert changed and not monitor.overloaded


def test_cpu_share_over_the_limit_is_overload() -> None:
    monitor = LoadMonitor(LoadLimits(max_cpu=0.85))
    monitor.clock_fired(0.0, 0.0)
    _, cpu = run_window(monitor, 0.0, [0.0005] * 50, 0.0, 0.9)  # first window: no CPU figure
    assert not monitor.overloaded and monitor.last is not None and monitor.last.cpu is None
    changed, _ = run_window(monitor, 1.0, [0.0005] * 50, cpu, 0.95)
    assert changed and monitor.overloaded


def test_a_bad_window_during_recovery_starts_it_again() -> None:
    monitor = LoadMonitor(LoadLimits(recover_windows=2))
    monitor.clock_fired(0.0, 0.0)
    _, cpu = run_window(monitor, 0.0, [0.02] * 50, 0.0, 0.5)
    assert monitor.overloaded
    _, cpu = run_window(monitor, 1.0, [0.0] * 50, cpu, 0.5)
    _, cpu = run_window(monitor, 2.0, [0.02] * 50, cpu, 0.5)
    _, cpu = run_window(monitor, 3.0, [0.0] * 50, cpu, 0.5)
    assert monitor.overloaded
    _, cpu = run_window(monitor, 4.0, [0.0] * 50, cpu, 0.5)
    assert not monitor.overloaded


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lag": 0},
        {"window": 0},
        {"recover_windows": 0},
        {"late_wakeups": 0},
        {"max_cpu": 0},
    ],
)
def test_limits_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadLimits(**kwargs)  # type: ignore[arg-type]
