"""The poller's sense of time, injected: wall time, monotonic time, sleeping and timers.

Every wait of the poller (its schedule, back-off, ``Retry-After``, jitter) goes through one
``Clock``, so tests can drive time by hand instead of sleeping; ``SystemClock`` is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


class Timer(Protocol):
    """A callback planned on a clock; ``cancel()`` drops it if it has not run yet."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Wall time for what users see, monotonic time for every wait."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (window bounds, timestamps on the metrics)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: due times, budgets, ``Retry-After``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` of monotonic time have passed (at once if not positive)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` in the running event loop once ``monotonic()`` reaches ``when``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and the event loop's timers.

    ``wall`` replaces ``time.time`` only (``--once`` and tests that fix "now" for the windows).
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def time(self) -> float:
        return self._wall()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        delay = max(0.0, when - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, callback)


SYSTEM_CLOCK = SystemClock()
