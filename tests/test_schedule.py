"""When to poll, alone: the schedule and its task on a fake clock, with polls that are scripted.

No HTTP here: a "poll" records the clock's time and may take time on that clock. What the
schedule promises: the first poll at once, later ones spread over the interval by account,
jitter within its bounds and not accumulating, never two polls of an account in one interval
(nor a catch-up burst after an overrun), Retry-After holding an account back, a capacity on
polls under way, and a stop that ends every wait without the clock moving.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import defaultdict

import pytest
from fakeclock import FakeClock

from exporter.clock import SystemClock
from exporter.fetch import RetryAfterGate
from exporter.schedule import Cadence, Schedule, Scheduler, phase

INTERVAL = 60.0


class Polls:
    """Scripted polls: when each account's poll started (on the clock), and how many run."""

    def __init__(self, clock: FakeClock, cadence: Cadence, takes: float = 0.0) -> None:
        self.clock = clock
        self.cadence = cadence
        self.takes = takes  # seconds of the clock each poll takes
        self.started: dict[str, list[float]] = defaultdict(list)
        self.running = 0
        self.most = 0
        self.gone: set[str] = set()

    async def __call__(self, name: str) -> Cadence | None:
        self.started[name].append(self.clock.monotonic())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.clock.sleep(self.takes)
        finally:
            self.running -= 1
        return None if name in self.gone else self.cadence


def scheduler(clock: FakeClock, polls: Polls, capacity: int = 100, seed: int = 1) -> Scheduler:
    return Scheduler(clock, random.Random(seed), polls, lambda: capacity)


# -- the plan ----------------------------------------------------------------------------------


def test_first_poll_at_once_then_at_the_accounts_phase_then_every_interval() -> None:
    clock = FakeClock()
    plan = Schedule(clock, random.Random(1))
    start = clock.monotonic()
    plan.enter("a")
    assert plan.pop_due() == "a" and plan.pop_due() is None
    second = plan.plan_next("a", Cadence(INTERVAL, 0.0))
    assert second == start + INTERVAL * (0.5 + phase("a"))
    assert plan.next_poll["a"] == pytest.approx(clock.time() + second - start)
    assert plan.pop_due() is None  # not due yet
    assert plan.plan_next("a", Cadence(INTERVAL, 0.0)) == second + INTERVAL


def test_second_polls_are_spread_evenly_over_the_interval() -> None:
    clock = FakeClock()
    plan = Schedule(clock, random.Random(1))
    names = [f"shop-{i}" for i in range(2000)]
    offsets = []
    for name in names:
        plan.enter(name)
        offsets.append(plan.plan_next(name, Cadence(INTERVAL, 0.0)) - clock.monotonic())
    assert all(0.5 * INTERVAL <= o < 1.5 * INTERVAL for o in offsets)
    tenths = [0] * 10
    for offset in offsets:
        tenths[int((offset / INTERVAL - 0.5) * 10)] += 1
    assert all(150 <= n <= 250 for n in tenths), tenths  # 200 each if perfectly even


def test_jitter_stays_within_its_bounds_and_does_not_accumulate() -> None:
    clock = FakeClock()
    jitter = 5.0
    plan = Schedule(clock, random.Random(3))
    plan.enter("a")
    slot = clock.monotonic() + INTERVAL * (0.5 + phase("a"))
    shifts = []
    for _ in range(300):
        at = plan.plan_next("a", Cadence(INTERVAL, jitter))
        shifts.append(at - slot)
        slot += INTERVAL  # the slots stay an interval apart, whatever the jitter drew
    assert all(-jitter <= s <= jitter for s in shifts)
    assert min(shifts) < -jitter / 2 and max(shifts) > jitter / 2  # both ways, widely


async def test_retry_after_holds_the_account_without_moving_its_slots() -> None:
    clock = FakeClock()
    plan = Schedule(clock, random.Random(1))
    start = clock.monotonic()
    plan.enter("a")
    plan.pop_due()
    slot = plan.plan_next("a", Cadence(INTERVAL, 0.0))
    plan.hold("a", 100.0)  # longer than the slot is away
    await clock.advance(slot - start)
    assert plan.pop_due() is None
    assert plan.next_due() == start + 100.0
    await clock.advance(start + 100.0 - clock.monotonic())
    assert plan.pop_due() == "a"
    # The next slot is the account's own again, after the held poll: none is caught up.
    following = plan.plan_next("a", Cadence(INTERVAL, 0.0))
    assert following == pytest.approx(
        slot + math.ceil((start + 100.0 - slot) / INTERVAL) * INTERVAL
    )
    assert start + 100.0 <= following < start + 100.0 + INTERVAL


def test_a_removed_account_is_not_polled_and_can_come_back() -> None:
    clock = FakeClock()
    plan = Schedule(clock, random.Random(1))
    plan.enter("a")
    plan.remove("a")
    assert plan.pop_due() is None and "a" not in plan.next_poll
    plan.enter("a")
    assert plan.pop_due() == "a"


# -- the task that starts polls ------------------------------------------------------------------


async def test_an_account_is_never_polled_twice_in_one_interval() -> None:
    clock = FakeClock()
    jitter = 0.4 * INTERVAL  # as wide as it can be without two polls sharing an interval
    polls = Polls(clock, Cadence(INTERVAL, jitter))
    names = [f"shop-{i}" for i in range(20)]
    running = scheduler(clock, polls)
    start = clock.monotonic()
    running.start(names)
    await clock.advance(50 * INTERVAL)
    await running.stop()
    for name in names:
        times = polls.started[name]
        assert times[0] == start
        # Each later poll lies within the jitter of its slot: one poll per slot, none missed.
        slots = [start + INTERVAL * (0.5 + phase(name) + k) for k in range(len(times) - 1)]
        assert all(abs(t - s) <= jitter for t, s in zip(times[1:], slots, strict=True)), name
        assert slots[-1] + INTERVAL + jitter > start + 50 * INTERVAL, name  # none missing
        # ... so no two polls share an interval-long stretch centred on a slot.
        per_slot = defaultdict(int)
        for t in times[1:]:
            per_slot[round((t - slots[0]) / INTERVAL)] += 1
        assert set(per_slot.values()) == {1}, name


async def test_a_poll_that_overruns_skips_the_missed_slots_and_does_not_catch_up() -> None:
    clock = FakeClock()
    polls = Polls(clock, Cadence(INTERVAL, 0.0), takes=2.5 * INTERVAL)
    running = scheduler(clock, polls)
    start = clock.monotonic()
    running.start(["a"])
    await clock.advance(10 * INTERVAL)
    await running.stop()
    times = polls.started["a"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3
    assert all(gap >= 2.5 * INTERVAL for gap in gaps)  # never started while the last still ran
    # Each poll after the first starts in one of the account's slots (its phase is kept).
    first_slot = start + INTERVAL * (0.5 + phase("a"))
    for t in times[1:]:
        assert (t - first_slot) / INTERVAL == pytest.approx(round((t - first_slot) / INTERVAL))


async def test_at_most_capacity_polls_run_at_once_and_all_get_their_turn() -> None:
    clock = FakeClock()
    polls = Polls(clock, Cadence(INTERVAL, 0.0), takes=1.0)
    running = scheduler(clock, polls, capacity=3)
    names = [f"shop-{i}" for i in range(10)]
    start = clock.monotonic()
    running.start(names)
    await clock.advance(5.0)
    await running.stop()
    assert polls.most == 3
    firsts = sorted(polls.started[n][0] - start for n in names)
    assert firsts == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # three at a time, each a second long


async def test_an_account_gone_after_its_poll_is_not_planned_again() -> None:
    clock = FakeClock()
    polls = Polls(clock, Cadence(INTERVAL, 0.0))
    polls.gone.add("b")
    running = scheduler(clock, polls)
    running.start(["a", "b"])
    await clock.advance(3 * INTERVAL)
    await running.stop()
    assert len(polls.started["a"]) >= 3 and len(polls.started["b"]) == 1


async def test_an_account_added_while_running_is_polled_at_once() -> None:
    clock = FakeClock()
    polls = Polls(clock, Cadence(INTERVAL, 0.0))
    running = scheduler(clock, polls)
    running.start(["a"])
    await clock.advance(10.0)
    running.add("b")
    await clock.advance(0)
    await running.stop()
    assert polls.started["b"] == [clock.monotonic()]


async def test_stop_ends_every_wait_without_the_clock_moving() -> None:
    clock = FakeClock()
    polls = Polls(clock, Cadence(INTERVAL, 0.0), takes=1000.0)  # polls waiting on the clock
    running = scheduler(clock, polls, capacity=2)
    running.start(["a", "b", "c"])  # two polls waiting, one account waiting for capacity
    await clock.settle()
    assert polls.running == 2 and running.running
    now = clock.monotonic()
    await asyncio.wait_for(running.stop(), 60.0)  # a guard: stop must not wait for the clock
    assert polls.running == 0 and not running.running
    assert clock.monotonic() == now
    await clock.advance(2000.0)
    assert len(polls.started) == 2  # nothing started after the stop


# -- Retry-After gate and the clock ------------------------------------------------------------


async def test_retry_after_gate_holds_every_request_of_the_account_until_its_time() -> None:
    clock = FakeClock()
    gate = RetryAfterGate(clock)
    assert gate.remaining() == 0.0
    gate.hold(10.0)
    gate.hold(3.0)  # a shorter wait does not cut a longer one short
    await clock.advance(4.0)
    assert gate.remaining() == 6.0
    await clock.advance(6.0)
    assert gate.remaining() == 0.0


async def test_the_system_clock_sleeps_and_times_on_the_event_loop() -> None:
    clock = SystemClock(lambda: 1234.0)
    assert clock.time() == 1234.0
    fired = asyncio.Event()
    clock.call_at(clock.monotonic(), fired.set)  # due now: runs on the next loop round
    await asyncio.wait_for(fired.wait(), 60.0)
    cancelled = clock.call_at(clock.monotonic() + 3600, fired.clear)
    cancelled.cancel()
    await clock.sleep(0)
    assert fired.is_set()


def test_overdue_counts_accounts_due_and_not_taken_off_the_plan() -> None:
    """Due and not started: held accounts (Retry-After), forgotten ones and those not yet due do
    not count; taking one off the plan (its poll starts) lowers the count."""
    clock = FakeClock()
    plan = Schedule(clock, random.Random(1))
    names = [f"a{i}" for i in range(40)]
    for name in names:
        plan.enter(name)
    assert plan.overdue() == 40
    plan.hold("a0", 30.0)  # the API asked it to wait: not overdue
    plan.remove("a1")  # gone
    assert plan.overdue() == 38
    started = [plan.pop_due() for _ in range(10)]
    assert None not in started and plan.overdue() == 28
    for name in started:  # their next polls are planned later in the interval
        plan.plan_next(name, Cadence(INTERVAL, 0.0))
    assert plan.overdue() == 28
    while plan.pop_due() is not None:
        pass
    assert plan.overdue() == 0
