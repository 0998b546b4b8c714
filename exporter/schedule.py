"""When to poll: every account once per interval, at its own phase, on an injected clock.

``Schedule`` is the plan (a heap of due times: no tasks, no I/O); ``Scheduler`` is the one task
that starts each account's poll when it is due, at most ``capacity()`` polls at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from exporter.clock import Clock, Timer


def phase(name: str) -> float:
    """A stable fraction in [0, 1) per account name: spreads polls evenly over the interval."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Cadence(NamedTuple):
    """How often an account is polled: its interval and the random shift of each poll."""

    interval: float
    jitter: float


class Schedule:
    """The due time of every account's next poll, on ``clock.monotonic()``.

    The first poll is due when the account enters; the second at its phase within the interval
    after that (``0.5 + phase`` intervals on), and each later one an interval after the slot
    before, shifted by up to ``jitter`` either way. A poll that overran its slot skips the
    missed ones rather than catching up. ``Retry-After`` holds an account back without moving
    its slots.
    """

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        # A heap of (due time, ticket, name); an entry counts only while its ticket is the
        # account's current one (a removed or re-added account's old entries are skipped).
        self._due: list[tuple[float, int, str]] = []
        self._tickets: dict[str, int] = {}
        self._next_ticket = itertools.count()
        self._epochs: dict[str, float] = {}  # accounts not yet polled by the schedule: entry
        self._slots: dict[str, float] = {}  # each account's current slot, before jitter
        self._held: dict[str, float] = {}  # no poll before this time (Retry-After)
        self._next_poll: dict[str, float] = {}

    @property
    def next_poll(self) -> Mapping[str, float]:
        """Wall-clock time of each account's next planned poll (for the status page)."""
        return self._next_poll

    def enter(self, name: str) -> None:
        """Plan an account's first poll: now."""
        now = self._clock.monotonic()
        self._epochs[name] = now
        self._slots.pop(name, None)
        self._push(name, now)

    def remove(self, name: str) -> None:
        """Forget an account: its planned poll does not happen."""
        for state in (self._tickets, self._epochs, self._slots, self._held, self._next_poll):
            state.pop(name, None)

    def hold(self, name: str, seconds: float) -> None:
        """No poll of the account for ``seconds`` from now (the API asked: ``Retry-After``)."""
        until = self._clock.monotonic() + seconds
        self._held[name] = max(self._held.get(name, until), until)

    def plan_next(self, name: str, cadence: Cadence) -> float:
        """Plan the poll after the one that just ended; returns its due time."""
        interval = cadence.interval
        now = self._clock.monotonic()
        epoch = self._epochs.pop(name, None)
        if epoch is not None:  # after the first poll: the account's own phase in the interval
            slot = epoch + interval * (0.5 + phase(name))
        else:
            slot = self._slots.get(name, now) + interval
        if slot < now:  # the poll overran its slot: skip the missed ones, do not catch up
            slot += math.ceil((now - slot) / interval) * interval
        self._slots[name] = slot
        jitter = cadence.jitter
        at = slot + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        self._next_poll[name] = self._clock.time() + max(0.0, at - now)
        self._push(name, at)
        return at

    def next_due(self) -> float | None:
        """The earliest due time in the plan (it may belong to a forgotten account)."""
        return self._due[0][0] if self._due else None

    def pop_due(self) -> str | None:
        """The next account whose poll is due now, taken off the plan; None if none is."""
        now = self._clock.monotonic()
        while self._due and self._due[0][0] <= now:
            _, ticket, name = heapq.heappop(self._due)
            if self._tickets.get(name) != ticket:
                continue  # removed or planned again since
            held = self._held.pop(name, 0.0)
            if held > now:
                self._push(name, held)
                continue
            return name
        return None

    def overdue(self) -> int:
        """Accounts whose poll is due now but has not been taken off the plan (not started).

        Accounts held back by ``Retry-After`` are not counted: the API asked them to wait. The
        walk descends the heap only below entries already due, so it costs the overdue ones.
        """
        now = self._clock.monotonic()
        due, count, stack = self._due, 0, [0] if self._due else []
        while stack:
            i = stack.pop()
            at, ticket, name = due[i]
            if at > now:
                continue  # and so is every entry below it
            if self._tickets.get(name) == ticket and self._held.get(name, 0.0) <= now:
                count += 1
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(due))
        return count

    def _push(self, name: str, at: float) -> None:
        ticket = next(self._next_ticket)
        self._tickets[name] = ticket
        heapq.heappush(self._due, (at, ticket, name))


class Scheduler:
    """Starts each account's poll when the ``Schedule`` says it is due.

    ``run(name)`` polls the account and returns its cadence, or None if it is gone (a reload
    removed it). At most ``capacity()`` polls are under way; an account's poll never starts
    while its previous one still runs.
    """

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        run: Callable[[str], Awaitable[Cadence | None]],
        capacity: Callable[[], int],
    ) -> None:
        self._clock = clock
        self.plan = Schedule(clock, rng)
        self._run = run
        self._capacity = capacity
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        """Started and not stopped; its task has not died."""
        return self._task is not None and not self._task.done()

    def start(self, names: list[str]) -> None:
        """Plan every account's first poll now and start the scheduling task."""
        for name in names:
            self.plan.enter(name)
        self._task = asyncio.create_task(self._loop(), name="poll scheduler")

    def add(self, name: str) -> None:
        """A new account (a reload): its first poll now, if polling has started."""
        if self.running:
            self.plan.enter(name)
            self.wake()

    def restart(self, name: str) -> None:
        """Poll the account now (its key changed): a poll under way is cancelled, the next starts
        at once and the account's phase starts again from here."""
        task = self._polls.pop(name, None)
        if task is not None:
            task.cancel()
        if self.running:
            self.plan.enter(name)
            self.wake()

    def remove(self, name: str) -> None:
        """An account that is gone: its poll under way is cancelled, no further one planned."""
        task = self._polls.pop(name, None)
        if task is not None:
            task.cancel()
        self.plan.remove(name)

    def wake(self) -> None:
        """Look at the plan again (an account was added, or the capacity changed)."""
        self._wake.set()

    async def _loop(self) -> None:
        """Start every due poll that capacity allows; wait until the next one is due."""
        while True:
            self._wake.clear()
            while len(self._polls) < self._capacity():
                name = self.plan.pop_due()
                if name is None:
                    break
                if name in self._polls:
                    continue  # its previous poll is still running: this slot is skipped
                self._polls[name] = asyncio.create_task(self._poll(name), name=f"poll {name}")
            timer: Timer | None = None
            due = self.plan.next_due()
            if due is not None and len(self._polls) < self._capacity():
                timer = self._clock.call_at(due, self._wake.set)
            await self._wake.wait()  # the next due time, a poll ended, or accounts were added
            if timer is not None:
                timer.cancel()

    async def _poll(self, name: str) -> None:
        try:
            cadence = await self._run(name)
            if cadence is not None:
                self.plan.plan_next(name, cadence)
        finally:
            if self._polls.get(name) is asyncio.current_task():
                del self._polls[name]
            self._wake.set()

    async def stop(self) -> None:
        """Cancel the scheduling task and every poll under way, and wait for them to end."""
        tasks = [*self._polls.values()]
        if self._task is not None:
            tasks.append(self._task)
        self._polls.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
