"""A clock that moves only when the test moves it, and a client that records on it.

``FakeClock`` implements ``exporter.clock.Clock``. Time jumps from one planned timer to the
next, but only once the program has settled: no request through a ``RecordingClient`` still
under way, and the event loop gone round a few times with nothing left to do. Requests to the
local fake API take real time; waits of the poller (schedule, back-off, Retry-After) take none.
So a test says "advance 30 s" and sees exactly what requests went out, and when, on this clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from exporter.client import TrafficSourceClient
from exporter.config import RestKey
from exporter.errors import ApiError
from exporter.traffic import TrafficRow

T = TypeVar("T")

# Loop rounds with nothing under way before time may jump: a timer's callback reaches a new
# request within a few rounds (wake the scheduler, start a poll task, start a window task).
_QUIET_ROUNDS = 20


class _Timer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic time from ``start``; wall time from ``wall`` (default: now, whole seconds)."""

    def __init__(self, start: float = 1000.0, wall: float | None = None) -> None:
        self._now = start
        wall = float(int(time.time())) if wall is None else wall
        self._wall_offset = wall - start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the Clock interface -------------------------------------------------------------------

    def time(self) -> float:
        return self._now + self._wall_offset

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_at(self._now + seconds, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            timer.cancel()

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    # -- moving time ---------------------------------------------------------------------------

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Real work under way (a request): time does not jump until it has ended."""
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def settle(self) -> None:
        """Let everything run that can without time passing (timers already due included)."""
        quiet = 0
        while quiet < _QUIET_ROUNDS:
            if self._busy:
                await self._idle.wait()
                quiet = 0
            elif (due := self.next_timer()) is not None and due <= self._now:
                heapq.heappop(self._timers)[2].callback()
                quiet = 0
            else:
                await asyncio.sleep(0)
                quiet += 1

    def next_timer(self) -> float | None:
        """When the earliest timer still planned is due."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def _fire_next(self) -> None:
        when, _, timer = heapq.heappop(self._timers)
        self._now = max(self._now, when)
        timer.callback()
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every timer due on the way, in order."""
        target = self._now + seconds
        await self.settle()
        while (due := self.next_timer()) is not None and due <= target:
            await self._fire_next()
        self._now = max(self._now, target)
        await self.settle()

    async def run(self, awaitable: Awaitable[T], *, limit: float = 3600.0) -> T:
        """Await ``awaitable``, jumping time to each timer whenever nothing else can happen.

        ``limit`` (seconds of this clock) stops a run that would never end.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        give_up = self._now + limit
        try:
            while True:
                await self.settle()
                if task.done():
                    return task.result()
                due = self.next_timer()
                if due is None:
                    raise AssertionError("waiting for something this clock does not move")
                if due > give_up:
                    raise AssertionError(f"still running after {limit} s on the clock")
                await self._fire_next()
        finally:
            task.cancel()


class Sent(NamedTuple):
    """A request as the poller sent it: when (on the fake clock), for which key and dates."""

    at: float
    key: str
    date_from: int
    date_to: int


class RecordingClient:
    """A ``TrafficSourceClient`` that records each request and holds time while it is out.

    Requests for the keys in ``hanging`` are left out of the hold: they are meant never to end.
    """

    def __init__(
        self, inner: TrafficSourceClient, clock: FakeClock, hanging: tuple[str, ...] = ()
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.hanging = hanging
        self.sent: list[Sent] = []
        self.errors: list[ApiError] = []

    async def fetch(self, key: RestKey, date_from: int, date_to: int) -> tuple[TrafficRow, ...]:
        revealed = key.reveal()
        self.sent.append(Sent(self.clock.monotonic(), revealed, date_from, date_to))
        if revealed in self.hanging:
            return await self.inner.fetch(key, date_from, date_to)
        with self.clock.busy():
            try:
                return await self.inner.fetch(key, date_from, date_to)
            except ApiError as error:
                self.errors.append(error)
                raise

    def times(self, key: str) -> list[float]:
        """When each request for ``key`` went out, on the fake clock."""
        return [s.at for s in self.sent if s.key == key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # close(), timeout, serves(): the real client's
