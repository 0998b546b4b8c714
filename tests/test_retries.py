"""Retries and back-off (issue 5), on a fake clock: when each request went out, exactly.

Transient failures are retried within a poll with exponential back-off and full jitter, bounded
by the attempts and by half the interval; ``Retry-After`` (seconds and HTTP-date) is honoured:
no request of the account is sent before it has elapsed. Permanent failures are not retried,
and the account keeps being polled at its interval, so it recovers by itself. An injected random
source makes the back-off exact; the requests go to the real local fake API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import Clients
from fakeclock import FakeClock, RecordingClient
from test_faults import client_for, key_of, make_config

from exporter.config import Config
from exporter.errors import ApiErrorReason
from exporter.fakeapi import AccountState, FakeAccount, FakeApi, Fault
from exporter.poller import Poller
from exporter.schedule import phase
from exporter.store import AccountSnapshot, SnapshotStore

R = ApiErrorReason
NAME = "shop"
KEY = key_of(NAME)


class ExtremeRandom(random.Random):
    """Full jitter at its upper (or lower) end, with every draw recorded."""

    def __init__(self, pick: str = "max") -> None:
        super().__init__(0)
        self.pick = pick
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.draws.append((a, b))
        return b if self.pick == "max" else a


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(KEY, seed=1), FakeAccount(key_of("other"), seed=2)])
    await api.start()
    yield api
    await api.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def retry_config(
    url: str,
    *,
    attempts: int,
    initial: float,
    maximum: float,
    interval: float = 60.0,
    windows: tuple[str, ...] = ("24h",),
    max_concurrency: int = 8,
    timeout: float = 0.25,
) -> Config:
    config = make_config(
        url,
        [NAME],
        interval=interval,
        stale_after=3 * interval,
        windows=windows,
        timeout=timeout,
        attempts=attempts,
        max_concurrency=max_concurrency,
    )
    retries = replace(config.api.retries, initial_backoff=initial, max_backoff=maximum)
    return replace(config, api=replace(config.api, retries=retries))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def clocked(
    clients: Clients, config: Config, clock: FakeClock, rng: random.Random
) -> tuple[Poller, RecordingClient]:
    """A poller on the fake clock, and the client that records its requests."""
    client = RecordingClient(client_for(clients, config), clock)
    poller = Poller(config, client, SnapshotStore(), clock=clock, rng=rng)  # type: ignore[arg-type]
    return poller, client


async def poll_once(
    clients: Clients, config: Config, clock: FakeClock, rng: random.Random
) -> tuple[AccountSnapshot, RecordingClient]:
    """One poll of the account, the clock moving whenever the poller waits."""
    poller, client = clocked(clients, config, clock, rng)
    return await clock.run(poller.poll(config.accounts[0])), client


# -- transient failures ------------------------------------------------------------------------


async def test_backoff_is_exponential_with_full_jitter_and_capped(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    fake.set_fault(Fault.SOMETHING_WENT_WRONG, key=KEY, count=3)
    config = retry_config(fake.url, attempts=4, initial=0.1, maximum=0.25)
    rng = ExtremeRandom("max")
    snapshot, client = await poll_once(clients, config, clock, rng)
    # Full jitter: each delay is drawn from [0, min(max_backoff, initial * 2^n)].
    assert rng.draws == [(0, 0.1), (0, 0.2), (0, 0.25)]
    # ... and waited for, exactly (the rng chose the maximum).
    assert gaps(client.times(KEY)) == pytest.approx([0.1, 0.2, 0.25])
    assert fake.count(KEY) == 4
    assert snapshot.up and snapshot.requests_total == 4
    assert snapshot.errors_total[R.API_ERROR] == 3


async def test_full_jitter_can_retry_at_once(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """The lower end of full jitter is 0: no minimum wait is added to the drawn delay."""
    fake.set_fault(Fault.SOMETHING_WENT_WRONG, key=KEY, count=2)
    config = retry_config(fake.url, attempts=3, initial=5.0, maximum=5.0)
    snapshot, client = await poll_once(clients, config, clock, ExtremeRandom("min"))
    assert snapshot.up and snapshot.requests_total == 3
    assert gaps(client.times(KEY)) == [0.0, 0.0]


TRANSIENT = [
    pytest.param(Fault.HANG, {}, R.TIMEOUT, id="timeout"),
    pytest.param(Fault.SLOW_BODY, {"seconds": 3.0}, R.TIMEOUT, id="slow_body"),
    pytest.param(Fault.RESET, {}, R.CONNECTION_ERROR, id="reset"),
    pytest.param(Fault.HTML_5XX, {"status": 503}, R.HTTP_ERROR, id="5xx"),
    pytest.param(Fault.RATE_LIMIT, {"retry_after": 0}, R.RATE_LIMITED, id="429"),
    pytest.param(Fault.TRUNCATED_JSON, {}, R.INVALID_RESPONSE, id="invalid_response"),
    pytest.param(Fault.SOMETHING_WENT_WRONG, {}, R.API_ERROR, id="something_went_wrong"),
]


@pytest.mark.parametrize(("fault", "params", "reason"), TRANSIENT)
async def test_transient_failure_is_retried_within_the_poll(
    fault: Fault,
    params: dict[str, Any],
    reason: ApiErrorReason,
    fake: FakeApi,
    clients: Clients,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    fake.set_fault(fault, key=KEY, count=1, **params)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.02)
    snapshot, _ = await poll_once(clients, config, clock, random.Random(1))
    # The retry succeeded: the poll is up, the failed attempt is counted as a request and error.
    assert snapshot.up and snapshot.last_error is None
    assert snapshot.requests_total == 2 == fake.count(KEY)
    assert {r: n for r, n in snapshot.errors_total.items() if n} == {reason: 1}
    assert [r.getMessage() for r in caplog.records] == ["every account polled once"]


async def test_retries_are_bounded_by_attempts(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    fake.set_fault(Fault.HTML_5XX, key=KEY, status=503)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.02, windows=("24h", "7d"))
    snapshot, _ = await poll_once(clients, config, clock, random.Random(1))
    assert fake.count(KEY) == 6 == snapshot.requests_total  # 2 windows x 3 attempts
    assert not snapshot.up and snapshot.errors_total[R.HTTP_ERROR] == 6


async def test_retries_are_bounded_by_half_the_interval(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    fake.set_fault(Fault.HTML_5XX, key=KEY, status=503)
    # Budget 30 s: request at 0, back-off 20, request at 20, back-off 40 would end at 60.
    config = retry_config(fake.url, attempts=10, initial=20.0, maximum=1000.0, interval=60.0)
    snapshot, client = await poll_once(clients, config, clock, ExtremeRandom("max"))
    assert fake.count(KEY) == 2 == snapshot.requests_total
    assert gaps(client.times(KEY)) == [20.0]
    assert snapshot.poll_duration == 20.0  # given up at once, not after a last back-off
    assert not snapshot.up and snapshot.last_error is R.HTTP_ERROR


# -- Retry-After ------------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01)
    snapshot, client = await poll_once(clients, config, clock, ExtremeRandom("min"))
    assert gaps(client.times(KEY)) == [1.0]  # Retry-After, not the (zero) back-off
    assert snapshot.up and snapshot.errors_total[R.RATE_LIMITED] == 1


async def test_retry_after_http_date_is_honoured(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=2, retry_after_form="http-date", count=1)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01, interval=10.0)
    snapshot, client = await poll_once(clients, config, clock, ExtremeRandom("min"))
    # The date has whole seconds: it names a moment 1-2 s after the first answer; the client
    # turned it into a wait, and the retry went out exactly that much later.
    (error,) = client.errors
    assert error.retry_after is not None and 0 < error.retry_after <= 2
    assert gaps(client.times(KEY)) == pytest.approx([error.retry_after])
    assert snapshot.up


async def test_retry_after_holds_back_the_accounts_other_windows(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """With one slot, the second window waits behind the first; after a 429 it must not go."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = retry_config(
        fake.url, attempts=3, initial=0.01, maximum=0.01, windows=("24h", "7d"), max_concurrency=1
    )
    snapshot, client = await poll_once(clients, config, clock, ExtremeRandom("min"))
    first, *later = client.times(KEY)
    assert [t - first for t in later] == [1.0, 1.0]
    assert snapshot.up


async def test_retry_after_beyond_the_budget_delays_the_next_poll(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """The poll gives up (Retry-After is past its budget); the schedule then waits it out."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=100, count=1)
    interval = 60.0  # budget 30 s; the account's next slot comes long before 100 s
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01, interval=interval)
    poller, client = clocked(clients, config, clock, ExtremeRandom("min"))
    epoch = clock.monotonic()
    poller.start()
    try:
        await clock.advance(200.0)
    finally:
        await poller.stop()
    first, second, third, *_ = client.times(KEY)
    assert first == epoch
    assert second == epoch + 100.0  # the slots before were skipped, not caught up
    # Then back to the account's own slots (its phase within the interval is kept).
    slot = epoch + interval * (0.5 + phase(NAME))
    assert third == pytest.approx(slot + math.ceil((second - slot) / interval) * interval)
    assert third > second
    assert fake.count(KEY) == len(client.sent)


# -- permanent failures ---------------------------------------------------------------------


def break_and_fix(fake: FakeApi, how: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Functions that break the account on the vendor's side and fix it again."""
    account = fake.accounts[KEY]
    if how == "invalid_key":
        return (lambda: fake.remove_account(KEY)), (lambda: fake.add_account(account))
    if how == "account_inactive":
        return (lambda: fake.set_state(KEY, AccountState.INACTIVE)), (
            lambda: fake.set_state(KEY, AccountState.PAID)
        )
    fault = {
        "validation_failed": Fault.VALIDATION_FAILED,
        "interval_too_long": Fault.INTERVAL_TOO_LONG,
        "http_error": Fault.HTML_5XX,
    }[how]
    params = {"status": 404} if fault is Fault.HTML_5XX else {}
    return (lambda: fake.set_fault(fault, key=KEY, **params)), (
        lambda: fake.set_fault(None, key=KEY)
    )


@pytest.mark.parametrize(
    "how",
    ["invalid_key", "account_inactive", "validation_failed", "interval_too_long", "http_error"],
)
async def test_permanent_failure_is_not_retried_and_recovers_by_itself(
    how: str,
    fake: FakeApi,
    clients: Clients,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    interval = 60.0
    config = retry_config(fake.url, attempts=5, initial=0.01, maximum=0.01, interval=interval)
    store = SnapshotStore()
    client = RecordingClient(client_for(clients, config), clock)
    poller = Poller(config, client, store, clock=clock, rng=random.Random(1))  # type: ignore[arg-type]
    break_it, fix_it = break_and_fix(fake, how)
    break_it()
    epoch = clock.monotonic()
    poller.start()
    try:
        await clock.advance(2.5 * interval)  # at start-up, at its phase, an interval later
        failing = store.get(NAME)
        assert failing is not None and failing.last_error is ApiErrorReason(how)
        assert len(client.sent) == 3
        fix_it()
        await clock.advance(interval)
        recovered = store.get(NAME)
        assert recovered is not None and recovered.up
    finally:
        await poller.stop()
    # One request per poll (never retried), one poll per interval (never given up on).
    times = client.times(KEY)
    slots = [epoch] + [epoch + interval * (0.5 + phase(NAME) + k) for k in range(3)]
    assert times == pytest.approx(slots)
    assert fake.count(KEY) == len(times)
    assert recovered.errors_total[ApiErrorReason(how)] == len(times) - 1
    assert recovered.requests_total == len(times)
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter.poller"]
    assert messages == ["account down", "every account polled once", "account recovered"]


async def test_permanent_failures_do_not_wait_on_other_accounts(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """A rate-limited account's Retry-After holds back only that account."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = make_config(fake.url, [NAME, "other"], windows=["24h"], max_concurrency=1)
    poller, client = clocked(clients, config, clock, ExtremeRandom("min"))
    started = clock.monotonic()
    await clock.run(asyncio.gather(*(poller.poll(a) for a in config.accounts)))
    assert client.times(key_of("other")) == [started]
    assert client.times(KEY) == [started, started + 1.0]


async def test_stop_ends_a_poll_waiting_out_retry_after(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """Shutdown does not wait for the API's pause: the waiting poll is cancelled, not resumed."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=20, count=1)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01, interval=60.0)
    poller, client = clocked(clients, config, clock, ExtremeRandom("min"))
    poller.start()
    await clock.advance(10.0)  # the retry is due at 20 s
    assert len(client.sent) == 1 and not poller.ready()
    await asyncio.wait_for(poller.stop(), 60.0)  # a guard: stop must not wait for the clock
    assert not poller.healthy()
    await clock.advance(100.0)
    assert len(client.sent) == 1 == fake.count(KEY)


async def test_a_retry_after_a_reload_goes_through_the_new_client(
    fake: FakeApi, clients: Clients, clock: FakeClock
) -> None:
    """A reload that moves api.url retires the old client at once: a poll that is waiting to
    retry sends its retry through the new client, to the new URL, and does not fail for it."""
    moved = FakeApi([FakeAccount(KEY, seed=1)])
    await moved.start()
    try:
        fake.set_fault(Fault.HTML_5XX, key=KEY, count=1)
        config = retry_config(fake.url, attempts=2, initial=1.0, maximum=1.0)
        poller, old = clocked(clients, config, clock, ExtremeRandom("max"))
        poll = asyncio.create_task(poller.poll(config.accounts[0]))
        await clock.settle()  # the first attempt failed; the poll waits out its back-off
        assert fake.count(KEY) == 1 and not poll.done()
        reloaded = replace(config, api=replace(config.api, url=moved.url))
        poller.apply(reloaded, client=RecordingClient(clients.for_api(reloaded.api), clock))
        await old.close()  # as the daemon retires it: nothing of it is under way
        await clock.advance(1.0)
        snapshot = await poll
    finally:
        await moved.close()
    assert snapshot.up and snapshot.last_error is None
    assert (fake.count(KEY), moved.count(KEY)) == (1, 1)
