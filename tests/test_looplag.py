"""--debug.loop-lag: a blocked loop is measured, forgotten after the window, and exported."""

from __future__ import annotations

import asyncio
import time

from exporter.looplag import LoopLagMonitor
from exporter.selfmetrics import SelfMetrics


def test_longest_lag_within_the_window_then_forgotten() -> None:
    now = [100.0]
    monitor = LoopLagMonitor(10.0, clock=lambda: now[0])
    monitor.record(0.002, 100.0)
    monitor.record(0.250, 101.5)
    monitor.record(0.010, 105.0)
    assert monitor.max_lag() == 0.250
    now[0] = 111.0  # the 0.25 s lag was 9.5 s ago: still inside the window
    assert monitor.max_lag() == 0.250
    now[0] = 112.0  # now it is older than the window; the 10 ms one is not
    assert monitor.max_lag() == 0.010
    now[0] = 200.0
    assert monitor.max_lag() == 0.0


async def test_a_blocked_loop_is_measured() -> None:
    monitor = LoopLagMonitor(5.0)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # block the loop, as a long render would
    await asyncio.sleep(0.05)
    task.cancel()
    assert monitor.max_lag() >= 0.19  # the block, less at most one 10 ms period


def test_exported_only_when_measured() -> None:
    name = "retargeting_exporter_event_loop_lag_seconds"
    assert name not in SelfMetrics().render().decode()
    text = SelfMetrics(loop_lag=lambda: 0.125).render().decode()
    assert f"# TYPE {name} gauge\n{name} 0.125\n" in text  # read at scrape time
