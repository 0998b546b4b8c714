"""Retries and back-off (issue 5), measured on the fake's own request timestamps.

Transient failures are retried within a poll with exponential back-off and full jitter, bounded
by the attempts and by half the interval; ``Retry-After`` (seconds and HTTP-date) is honoured:
no request of the account is sent before it has elapsed. Permanent failures are not retried,
and the account keeps being polled at its interval, so it recovers by itself. An injected random
source makes the back-off measurable; intervals are fractions of a second.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import Clients
from test_faults import client_for, key_of, make_config, wait_for

from exporter.client import ApiErrorReason
from exporter.config import Config
from exporter.fakeapi import AccountState, FakeAccount, FakeApi, Fault
from exporter.poller import Poller, phase
from exporter.store import AccountSnapshot, SnapshotStore

R = ApiErrorReason
NAME = "shop"
KEY = key_of(NAME)

# Slot and spreading timings to 0.05-0.15 s: no full collection of a test run's heap meanwhile.
pytestmark = pytest.mark.usefixtures("exporter_sized_heap")


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


def arrivals(fake: FakeApi, key: str = KEY) -> list[float]:
    return [r.time for r in fake.requests_for(key)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def poll_once(
    fake: FakeApi, clients: Clients, config: Config, rng: random.Random
) -> AccountSnapshot:
    poller = Poller(config, client_for(clients, config), SnapshotStore(), rng=rng)
    return await poller.poll(config.accounts[0])


# -- transient failures ------------------------------------------------------------------------


async def test_backoff_is_exponential_with_full_jitter_and_capped(
    fake: FakeApi, clients: Clients
) -> None:
    fake.set_fault(Fault.SOMETHING_WENT_WRONG, key=KEY, count=3)
    config = retry_config(fake.url, attempts=4, initial=0.1, maximum=0.25)
    rng = ExtremeRandom("max")
    snapshot = await poll_once(fake, clients, config, rng)
    # Full jitter: each delay is drawn from [0, min(max_backoff, initial * 2^n)].
    assert rng.draws == [(0, 0.1), (0, 0.2), (0, 0.25)]
    # ... and waited for (the rng chose the maximum), measured where the requests arrive.
    for gap, delay in zip(gaps(arrivals(fake)), (0.1, 0.2, 0.25), strict=True):
        assert delay <= gap < delay + 0.1
    assert snapshot.up and snapshot.requests_total == 4
    assert snapshot.errors_total[R.API_ERROR] == 3


async def test_full_jitter_can_retry_at_once(fake: FakeApi, clients: Clients) -> None:
    """The lower end of full jitter is 0: no minimum wait is added to the drawn delay."""
    fake.set_fault(Fault.SOMETHING_WENT_WRONG, key=KEY, count=2)
    config = retry_config(fake.url, attempts=3, initial=5.0, maximum=5.0)
    snapshot = await poll_once(fake, clients, config, ExtremeRandom("min"))
    assert snapshot.up and snapshot.requests_total == 3
    assert all(gap < 0.1 for gap in gaps(arrivals(fake)))


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
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    fake.set_fault(fault, key=KEY, count=1, **params)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.02)
    snapshot = await poll_once(fake, clients, config, random.Random(1))
    # The retry succeeded: the poll is up, the failed attempt is counted as a request and error.
    assert snapshot.up and snapshot.last_error is None
    assert snapshot.requests_total == 2 == fake.count(KEY)
    assert {r: n for r, n in snapshot.errors_total.items() if n} == {reason: 1}
    assert [r.getMessage() for r in caplog.records] == ["every account polled once"]


async def test_retries_are_bounded_by_attempts(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.HTML_5XX, key=KEY, status=503)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.02, windows=("24h", "7d"))
    snapshot = await poll_once(fake, clients, config, random.Random(1))
    assert fake.count(KEY) == 6 == snapshot.requests_total  # 2 windows x 3 attempts
    assert not snapshot.up and snapshot.errors_total[R.HTTP_ERROR] == 6


async def test_retries_are_bounded_by_half_the_interval(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.HTML_5XX, key=KEY, status=503)
    # Budget 0.5 s: request at 0, back-off 0.2, request at 0.2, back-off 0.4 would end at 0.6.
    config = retry_config(fake.url, attempts=10, initial=0.2, maximum=10.0, interval=1.0)
    started = time.monotonic()
    snapshot = await poll_once(fake, clients, config, ExtremeRandom("max"))
    assert fake.count(KEY) == 2 == snapshot.requests_total
    assert time.monotonic() - started < 0.5
    assert not snapshot.up and snapshot.last_error is R.HTTP_ERROR


# -- Retry-After ------------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01)
    snapshot = await poll_once(fake, clients, config, ExtremeRandom("min"))
    first, second = arrivals(fake)
    assert 1.0 <= second - first < 1.3  # Retry-After, not the (zero) back-off
    assert snapshot.up and snapshot.errors_total[R.RATE_LIMITED] == 1


async def test_retry_after_http_date_is_honoured(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=2, retry_after_form="http-date", count=1)
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01, interval=10.0)
    wall_minus_mono = time.time() - time.monotonic()
    snapshot = await poll_once(fake, clients, config, ExtremeRandom("min"))
    first, second = arrivals(fake)
    # The date has whole seconds: it names a moment 1-2 s after the first answer.
    date = email.utils.formatdate(first + wall_minus_mono + 2, usegmt=True)
    not_before = email.utils.parsedate_to_datetime(date).timestamp()
    assert second + wall_minus_mono >= not_before - 0.01
    assert second - first < 2.3
    assert snapshot.up


async def test_retry_after_holds_back_the_accounts_other_windows(
    fake: FakeApi, clients: Clients
) -> None:
    """With one slot, the second window waits behind the first; after a 429 it must not go."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = retry_config(
        fake.url, attempts=3, initial=0.01, maximum=0.01, windows=("24h", "7d"), max_concurrency=1
    )
    snapshot = await poll_once(fake, clients, config, ExtremeRandom("min"))
    first, *later = arrivals(fake)
    assert len(later) == 2
    assert all(t - first >= 1.0 for t in later), [t - first for t in later]
    assert snapshot.up


async def test_retry_after_beyond_the_budget_delays_the_next_poll(
    fake: FakeApi, clients: Clients
) -> None:
    """The poll gives up (Retry-After is past its budget); the loop then waits it out."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    interval = 0.4  # budget 0.2 s; the account's next slot comes long before 1 s
    config = retry_config(fake.url, attempts=3, initial=0.01, maximum=0.01, interval=interval)
    store = SnapshotStore()
    poller = Poller(config, client_for(clients, config), store, rng=ExtremeRandom("min"))
    epoch = time.monotonic()
    poller.start()
    try:
        await wait_for(lambda: fake.count(KEY) >= 3, timeout=3.0, what="three requests")
    finally:
        await poller.stop()
    first, second, third = arrivals(fake)[:3]
    assert second - first >= 1.0  # the slots before first + 1 s were skipped, not caught up
    # Then back to the account's own slots (its phase within the interval is kept).
    since_slot = (third - epoch - interval * (0.5 + phase(NAME))) % interval
    assert since_slot < 0.15 and third > second
    snapshot = store.get(NAME)
    assert snapshot is not None and snapshot.up


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
    how: str, fake: FakeApi, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    interval = 0.3
    config = retry_config(fake.url, attempts=5, initial=0.01, maximum=0.01, interval=interval)
    store = SnapshotStore()
    poller = Poller(config, client_for(clients, config), store, rng=random.Random(1))
    break_it, fix_it = break_and_fix(fake, how)
    break_it()
    epoch = time.monotonic()
    poller.start()
    try:
        await wait_for(lambda: fake.count(KEY) >= 3, timeout=3.0, what="three polls")
        failing = store.get(NAME)
        assert failing is not None and failing.last_error is ApiErrorReason(how)
        fix_it()
        await wait_for(lambda: bool((s := store.get(NAME)) and s.up), 3.0, "recovery")
    finally:
        await poller.stop()
    # One request per poll (never retried), one poll per interval (never given up on).
    times = arrivals(fake)
    slots = [epoch] + [
        epoch + interval * (0.5 + phase(NAME)) + k * interval for k in range(len(times) - 1)
    ]
    recovered = store.get(NAME)
    assert recovered is not None
    # On a failure, say what happened: when each request came, and every failure's reason.
    story = f"arrivals - slots: {[round(a - s, 3) for a, s in zip(times, slots, strict=True)]}"
    story += f"; errors: { {str(r): n for r, n in recovered.errors_total.items() if n} }"
    for arrived, slot in zip(times, slots, strict=True):
        assert slot - 0.05 <= arrived <= slot + 0.15, story
    assert recovered.errors_total[ApiErrorReason(how)] == len(times) - 1
    assert recovered.requests_total == len(times)
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter.poller"]
    assert messages == ["account down", "every account polled once", "account recovered"]


async def test_permanent_failures_do_not_wait_on_other_accounts(
    fake: FakeApi, clients: Clients
) -> None:
    """A rate-limited account's Retry-After holds back only that account."""
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=1, count=1)
    config = make_config(fake.url, [NAME, "other"], windows=["24h"], max_concurrency=1)
    poller = Poller(config, client_for(clients, config), SnapshotStore(), rng=ExtremeRandom("min"))
    started = time.monotonic()
    await asyncio.gather(*(poller.poll(a) for a in config.accounts))
    other = arrivals(fake, key_of("other"))
    assert len(other) == 1 and other[0] - started < 0.5
