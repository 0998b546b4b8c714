"""Event-loop lag: how long the loop was kept from running a due timer (``--debug.loop-lag``).

A task sleeps a short ``period`` over and over; whatever it wakes up later than asked is time
the loop spent on something that did not yield (a long render, a big join, a GC pause). The
longest such delay within a sliding ``window`` is what the exporter reports. Off by default.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

PERIOD = 0.01  # a 10 ms timer: a block is measured to within about 10 ms, for ~100 wake-ups/s
_SLOTS = 10  # the window is kept in slots of a tenth of it, each with its own maximum


class LoopLagMonitor:
    """Measures the event loop's lag; ``max_lag()`` is the longest lag of the last ``window``."""

    def __init__(
        self,
        window: float,
        *,
        period: float = PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._period = period
        self._clock = clock
        self._slot = window / _SLOTS
        self._maxima: deque[tuple[int, float]] = deque()  # (slot number, longest lag in it)

    def record(self, lag: float, now: float) -> None:
        """Note one measured lag at monotonic time ``now``."""
        slot = math.floor(now / self._slot)
        if self._maxima and self._maxima[-1][0] == slot:
            if lag > self._maxima[-1][1]:
                self._maxima[-1] = (slot, lag)
        else:
            self._maxima.append((slot, lag))
        while self._maxima and self._maxima[0][0] < slot - _SLOTS:
            self._maxima.popleft()

    def max_lag(self) -> float:
        """The longest lag of the last ``window`` seconds, or a tenth more (0 if none)."""
        oldest = math.floor(self._clock() / self._slot) - _SLOTS
        return max((lag for slot, lag in self._maxima if slot >= oldest), default=0.0)

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            asked = self._clock()
            await asyncio.sleep(self._period)
            now = self._clock()
            self.record(max(0.0, now - asked - self._period), now)
