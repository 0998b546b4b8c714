"""The fake vendor API: documented answers, deterministic figures, and every fault mode.

Everything goes through real HTTP against a started fake, except the pure figures function.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.fakeapi import (
    DEMO_REVOKED_KEY,
    DOCUMENTED_EXAMPLE_ROWS,
    DOCUMENTED_SOURCES,
    ENDPOINT_PATH,
    MAX_WINDOW_SECONDS,
    AccountState,
    FakeAccount,
    FakeApi,
    Fault,
    demo_accounts,
    generated_accounts,
    main,
    success_body,
    traffic_rows,
)

# A guard, not a timing: a test waiting for a state the fake never reaches fails instead of
# hanging the suite (nothing here takes more than seconds, even on a loaded machine).
pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
NOW = 1_714_567_890  # the fake's clock: default windows end here
DAY = 86400
COUNTS = ("impressions", "click", "order", "revenue")

PAID = FakeAccount("key-paid", AccountState.PAID, seed=0)
PAYMENT_ERROR = FakeAccount("key-payment-error", AccountState.PAYMENT_ERROR, seed=1)
SUSPENDED = FakeAccount("key-suspended", AccountState.SUSPENDED, seed=2)
INACTIVE = FakeAccount("key-inactive", AccountState.INACTIVE, seed=3)
CLOSED = FakeAccount("key-closed", AccountState.CLOSED, seed=4)
WITH_SMS = FakeAccount("key-sms", seed=5, sources=(*DOCUMENTED_SOURCES, "SMS"))
ACCOUNTS = (PAID, PAYMENT_ERROR, SUSPENDED, INACTIVE, CLOSED, WITH_SMS)

# A window that is not hour-aligned, so partial hours are exercised over HTTP too.
WINDOW = (NOW - 7 * DAY - 1234, NOW - 56)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().rstrip(b"\n")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


def window_params(date_from: int, date_to: int) -> dict[str, str]:
    return {"date_from": str(date_from), "date_to": str(date_to)}


class ManualClock:
    """The fake's monotonic clock and sleep in these tests: time moves only when told to.

    :meth:`advance` moves it; inside :meth:`running` it jumps straight to the next wake-up
    whenever the fake sleeps, so a test sees how long the fake waited, on its clock, without
    waiting itself.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._slept = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        wake_up = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, wake_up))
        self._slept.set()
        try:
            await wake_up
        finally:  # cancelled: no longer sleeping
            self._sleepers = [s for s in self._sleepers if s[1] is not wake_up]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [sleeper for sleeper in self._sleepers if sleeper[0] <= self.now]
        self._sleepers = [sleeper for sleeper in self._sleepers if sleeper[0] > self.now]
        for _, wake_up in due:
            if not wake_up.done():
                wake_up.set_result(None)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async def jump() -> None:
            while True:
                while not self._sleepers:
                    self._slept.clear()
                    await self._slept.wait()
                self.advance(max(min(due for due, _ in self._sleepers) - self.now, 0.0))

        jumping = asyncio.create_task(jump())
        try:
            yield
        finally:
            jumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumping


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeApi]:
    """The fake on the vendor's clock NOW, waiting (latency, trickles) on ``clock``."""
    api = FakeApi(ACCOUNTS, clock=lambda: NOW, monotonic=clock.monotonic, sleep=clock.sleep)
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


async def fetch(
    session: aiohttp.ClientSession, fake: FakeApi, **params: str
) -> tuple[int, Any, bytes]:
    async with session.get(fake.url, params=params) as response:
        return response.status, response.headers, await response.read()


async def fetch_rows(session: aiohttp.ClientSession, fake: FakeApi, **params: str) -> Any:
    status, _, body = await fetch(session, fake, **params)
    assert status == 200
    payload = json.loads(body)
    assert payload["status"] == "success", payload
    return payload["data"]


# ---------------------------------------------------------------------------------------------
# Documented answers


@pytest.mark.parametrize(
    ("params", "fixture_name", "kind"),
    [
        ({}, "error-invalid-key.json", "invalid_key"),
        ({"rest_key": ""}, "error-invalid-key.json", "invalid_key"),
        ({"rest_key": "no-such-key"}, "error-invalid-key.json", "invalid_key"),
        ({"rest_key": DEMO_REVOKED_KEY}, "error-invalid-key.json", "invalid_key"),
        ({"rest_key": "key-inactive"}, "error-account-inactive.json", "account_inactive"),
        ({"rest_key": "key-closed"}, "error-account-inactive.json", "account_inactive"),
        (
            {"rest_key": "key-paid", **window_params(NOW - MAX_WINDOW_SECONDS - 1, NOW)},
            "error-interval-too-long.json",
            "interval_too_long",
        ),
        (
            {"rest_key": "key-paid", "date_from": str(NOW - MAX_WINDOW_SECONDS - 1)},
            "error-interval-too-long.json",
            "interval_too_long",
        ),
        (
            {"rest_key": "key-paid", "date_to": str(NOW)},
            "fail-date-from-required.json",
            "validation_failed",
        ),
        (
            {"rest_key": "key-paid", "date_from": "", "date_to": str(NOW)},
            "fail-date-from-required.json",
            "validation_failed",
        ),
        (
            {"rest_key": "key-paid", "date_from": "yesterday"},
            "error-something-went-wrong.json",
            "something_went_wrong",
        ),
        (
            {"rest_key": "key-paid", "date_from": str(NOW - DAY), "date_to": f"{NOW}.5"},
            "error-something-went-wrong.json",
            "something_went_wrong",
        ),
        (
            {"rest_key": "key-paid", **window_params(NOW, NOW - DAY)},
            "error-something-went-wrong.json",
            "something_went_wrong",
        ),
    ],
)
async def test_documented_error_bodies(
    fake: FakeApi,
    session: aiohttp.ClientSession,
    params: dict[str, str],
    fixture_name: str,
    kind: str,
) -> None:
    status, headers, body = await fetch(session, fake, **params)
    assert status == 200  # the vendor's real status is undocumented; the default is 200
    assert headers["Content-Type"] == "application/json"
    assert body == fixture_bytes(fixture_name)
    assert json.loads(body) == fixture(fixture_name)
    assert fake.requests[-1].kind == kind
    assert fake.requests[-1].status == 200


@pytest.mark.parametrize("error_status", [400, 401, 403, 500])
async def test_error_status_changes_only_the_status(
    fake: FakeApi, session: aiohttp.ClientSession, error_status: int
) -> None:
    fake.error_status = error_status
    status, _, body = await fetch(session, fake, rest_key="key-inactive")
    assert status == error_status
    assert body == fixture_bytes("error-account-inactive.json")
    status, _, _ = await fetch(session, fake, rest_key="key-paid")
    assert status == 200


async def test_the_documented_success_example_is_served_verbatim_when_pinned(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    expected = fixture("traffic-source-success.json")
    fake.set_rows("key-paid", DOCUMENTED_EXAMPLE_ROWS)
    status, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body) == expected
    assert body == json.dumps(expected).encode()  # same field order, same types
    fake.set_rows("key-paid", None)
    assert json.loads((await fetch(session, fake, rest_key="key-paid"))[2]) != expected


@pytest.mark.parametrize("account", [PAID, PAYMENT_ERROR, SUSPENDED])
async def test_served_states_answer_in_the_documented_shape(
    fake: FakeApi, session: aiohttp.ClientSession, account: FakeAccount
) -> None:
    example_row = fixture("traffic-source-success.json")["data"][0]
    status, headers, body = await fetch(
        session, fake, rest_key=account.rest_key, **window_params(*WINDOW)
    )
    assert (status, headers["Content-Type"]) == (200, "application/json")
    payload = json.loads(body)
    assert list(payload) == ["status", "data"]
    assert payload["data"] == traffic_rows(account, *WINDOW)
    assert [row["source_name"] for row in payload["data"]] == list(DOCUMENTED_SOURCES)
    for row in payload["data"]:
        assert list(row) == list(example_row)
        assert [type(value) for value in row.values()] == [type(v) for v in example_row.values()]
        assert re.fullmatch(r"\d+\.\d\d", row["ctr"]) and re.fullmatch(r"\d+\.\d\d", row["cvr"])
    assert fake.requests[-1].kind == "success"
    assert fake.requests[-1].window == WINDOW


async def test_an_undocumented_source_is_served_after_the_documented_ones(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    rows = await fetch_rows(session, fake, rest_key="key-sms")
    assert [row["source_name"] for row in rows] == [*DOCUMENTED_SOURCES, "SMS"]
    assert rows[-1]["impressions"] > 0


async def test_thirty_days_exactly_is_allowed_and_one_second_more_is_not(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    start = NOW - 40 * DAY
    rows = await fetch_rows(
        session, fake, rest_key="key-paid", **window_params(start, start + MAX_WINDOW_SECONDS)
    )
    assert rows == traffic_rows(PAID, start, start + MAX_WINDOW_SECONDS)
    _, _, body = await fetch(
        session, fake, rest_key="key-paid", **window_params(start, start + MAX_WINDOW_SECONDS + 1)
    )
    assert body == fixture_bytes("error-interval-too-long.json")
    # Only date_from: the window ends "now" on the vendor's side.
    await fetch_rows(session, fake, rest_key="key-paid", date_from=str(NOW - MAX_WINDOW_SECONDS))
    assert fake.requests[-1].window == (NOW - MAX_WINDOW_SECONDS, NOW)


async def test_default_windows_end_now(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    rows = await fetch_rows(session, fake, rest_key="key-paid")
    assert rows == traffic_rows(PAID, NOW - MAX_WINDOW_SECONDS, NOW)
    assert fake.requests[-1].window == (NOW - MAX_WINDOW_SECONDS, NOW)
    rows = await fetch_rows(session, fake, rest_key="key-paid", date_from=str(NOW - DAY))
    assert rows == traffic_rows(PAID, NOW - DAY, NOW)


async def test_the_zero_impressions_oddity_over_http(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    rows = await fetch_rows(session, fake, rest_key="key-paid", **window_params(NOW, NOW))
    assert all(row[name] == 0 for row in rows for name in COUNTS)
    assert {(row["ctr"], row["cvr"]) for row in rows} == {("1.00", "0.00")}


async def test_only_get_on_the_endpoint(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    async with session.post(fake.url, params={"rest_key": "key-paid"}) as response:
        assert response.status == 405
    async with session.get(fake.url.replace(ENDPOINT_PATH, "/v1/other")) as response:
        assert response.status == 404
    assert [r.kind for r in fake.requests] == ["method_not_allowed", "not_found"]


# ---------------------------------------------------------------------------------------------
# Figures


@pytest.mark.parametrize(
    "sources",
    [DOCUMENTED_SOURCES, ("SMS", 'Pop "ups"', "Emailuri ă", "back\\slash", "")],
    ids=["documented", "odd-names"],
)
def test_success_body_is_the_encoded_rows(sources: tuple[str, ...]) -> None:
    """The fast path writes exactly what json.dumps writes for the rows (answers are bytes)."""
    windows = [(NOW - DAY, NOW), (NOW - 30 * DAY, NOW), (NOW, NOW), (17, 17 + 3601)]
    for seed in range(40):
        account = FakeAccount(f"k{seed}", seed=seed, sources=sources)
        for date_from, date_to in windows:
            rows = traffic_rows(account, date_from, date_to)
            expected = json.dumps({"status": "success", "data": rows}).encode()
            assert success_body(account, date_from, date_to) == expected


def test_traffic_rows_are_deterministic() -> None:
    first = traffic_rows(PAID, *WINDOW)
    assert first == traffic_rows(FakeAccount("another-key", seed=0), *WINDOW)
    assert first == traffic_rows(PAID, *WINDOW)


def test_the_figures_are_pinned() -> None:
    """The demo, the dashboards' screenshots and every benchmark see the same figures: a faster
    way to compute them (as in issue 6) must not change one. 3,000 windows of 300 accounts,
    hashed; the digest is that of the first, plainly written version."""
    rng = random.Random(6)
    digest = hashlib.sha256()
    for seed in range(300):
        account = FakeAccount("k", seed=seed, sources=(*DOCUMENTED_SOURCES, "SMS"))
        for _ in range(10):
            start, length = rng.randrange(0, 2_000_000_000), rng.randrange(0, 30 * DAY + 1)
            digest.update(json.dumps(traffic_rows(account, start, start + length)).encode())
    assert digest.hexdigest() == "2dcbc2ce23eef66913c904bf080a972b4ebfd0547215bb55ad1da8cb91f4226a"


def test_traffic_rows_move_with_time_and_seed() -> None:
    base = traffic_rows(PAID, NOW - DAY, NOW)
    assert traffic_rows(PAID, NOW - DAY + 3600, NOW + 3600) != base
    assert traffic_rows(FakeAccount("k", seed=7), NOW - DAY, NOW) != base
    # Hour by hour, the figures follow a visible daily shape, not a flat line.
    hourly = [
        traffic_rows(PAID, start, start + 3600)[0]["impressions"]
        for start in range(NOW - DAY, NOW, 3600)
    ]
    assert max(hourly) > 2 * min(hourly)


def test_partial_hours_count_proportionally() -> None:
    hour = NOW - NOW % 3600
    whole = traffic_rows(PAID, hour, hour + 3600)[0]["impressions"]
    first_half = traffic_rows(PAID, hour, hour + 1800)[0]["impressions"]
    second_half = traffic_rows(PAID, hour + 1800, hour + 3600)[0]["impressions"]
    assert whole > 100
    assert abs(first_half - whole / 2) <= 1
    assert abs(first_half + second_half - whole) <= 1


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10**6),
    start=st.integers(min_value=0, max_value=2_000_000_000),
    length=st.integers(min_value=0, max_value=MAX_WINDOW_SECONDS),
    split=st.floats(min_value=0, max_value=1),
)
def test_traffic_rows_invariants(seed: int, start: int, length: int, split: float) -> None:
    account = FakeAccount("k", seed=seed, sources=(*DOCUMENTED_SOURCES, "SMS"))
    rows = traffic_rows(account, start, start + length)
    assert [row["source_name"] for row in rows] == list(account.sources)
    for row in rows:
        impressions, clicks, orders, revenue = (row[name] for name in COUNTS)
        assert 0 <= orders <= clicks <= impressions
        assert revenue >= 0 and (revenue == 0 or orders > 0)
        assert row["ctr"] == (f"{clicks / impressions * 100:.2f}" if impressions else "1.00")
        assert row["cvr"] == (f"{orders / clicks * 100:.2f}" if clicks else "0.00")
    # Windows add up (up to rounding): the figures are an integral over time.
    middle = start + int(length * split)
    left, right = (
        traffic_rows(account, start, middle),
        traffic_rows(account, middle, start + length),
    )
    for whole, a, b in zip(rows, left, right, strict=True):
        assert abs(whole["impressions"] - a["impressions"] - b["impressions"]) <= 1


def test_thirty_day_magnitudes_are_like_the_vendors_example() -> None:
    for seed in range(20):
        rows = traffic_rows(FakeAccount("k", seed=seed), NOW - MAX_WINDOW_SECONDS, NOW)
        totals = {name: sum(row[name] for row in rows) for name in COUNTS}
        assert 100_000 <= totals["impressions"] <= 3_000_000, totals
        assert 1_000 <= totals["click"] <= 100_000, totals
        assert 10 <= totals["order"] <= 2_000, totals
        assert 10_000 <= totals["revenue"] <= 1_000_000, totals


def test_zero_impressions_report_ctr_one_like_the_vendor() -> None:
    pop_ups = traffic_rows(PAID, NOW - MAX_WINDOW_SECONDS, NOW)[3]  # seed 0: Pop-ups is idle
    # The vendor's documented example has such a row: no impressions, ctr "1.00".
    assert pop_ups == fixture("traffic-source-success.json")["data"][3]


def test_traffic_rows_cost_the_same_for_a_window_of_any_length() -> None:
    """The request path stays cheap: a window costs a few prefix-sum lookups per source, not a
    walk over its hours. Counted in Python lines run, which no load on the machine changes."""
    account = FakeAccount("k", seed=42)
    traffic_rows(account, NOW - MAX_WINDOW_SECONDS, NOW)  # build the tables

    def lines_run(length: int) -> int:
        lines = 0

        def trace(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal lines
            lines += event == "line"
            return trace

        previous = sys.gettrace()
        sys.settrace(trace)
        try:
            traffic_rows(account, NOW - length, NOW)
        finally:
            sys.settrace(previous)
        return lines

    day, month, years = lines_run(DAY), lines_run(MAX_WINDOW_SECONDS), lines_run(7 * 365 * DAY)
    assert day == month == years <= 50 * len(account.sources)
    assert lines_run(3600) <= day  # an hour with no orders skips the revenue


def test_an_inverted_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="before"):
        traffic_rows(PAID, NOW, NOW - 1)


# ---------------------------------------------------------------------------------------------
# Transport faults


async def test_hang_never_answers_and_ends_when_the_client_gives_up(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.HANG, key="key-paid")
    waiting = asyncio.create_task(fetch(session, fake, rest_key="key-paid"))
    await fake.wait_until(lambda: fake.in_flight == 1)
    waiting.cancel()  # the client gives up
    await fake.wait_until(lambda: fake.in_flight == 0)
    assert waiting.cancelled()
    assert [(r.kind, r.status) for r in fake.requests] == [("hang", 0)]


async def test_close_cuts_hanging_and_trickling_requests_short(fake: FakeApi) -> None:
    fake.set_fault(Fault.HANG, key="key-paid")
    fake.set_fault(Fault.SLOW_BODY, seconds=30)  # on a clock that never moves: never done
    async with aiohttp.ClientSession() as client:
        hanging = asyncio.create_task(fetch(client, fake, rest_key="key-paid"))
        trickling = asyncio.create_task(fetch(client, fake, rest_key="other"))
        await fake.wait_until(lambda: fake.in_flight == 2)
        await fake.close()
        results = await asyncio.gather(hanging, trickling, return_exceptions=True)
    assert all(isinstance(result, aiohttp.ClientError) for result in results), results
    assert [r.kind for r in fake.requests] == ["hang", "slow_body"]


async def test_close_ends_requests_waiting_on_the_latency(clock: ManualClock) -> None:
    api = FakeApi([PAID], latency=30, monotonic=clock.monotonic, sleep=clock.sleep)
    await api.start()
    async with aiohttp.ClientSession() as client:
        waiting = asyncio.create_task(fetch(client, api, rest_key="key-paid"))
        await api.wait_until(lambda: api.in_flight == 1)
        await api.close()
        with pytest.raises(aiohttp.ClientError):
            await waiting  # cut off, not answered
    assert api.requests[0].status == 0
    with pytest.raises(RuntimeError, match="not started"):
        await api.stop_listening()


async def test_slow_body_sends_headers_then_trickles(
    fake: FakeApi, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    fake.set_fault(Fault.SLOW_BODY, key="key-paid", seconds=0.5)
    started = clock.now
    async with session.get(fake.url, params={"rest_key": "key-paid"}) as response:
        # The headers and the first bytes come while the fake's clock stands still.
        first = await response.content.read(8)
        assert (response.status, clock.now) == (200, started)
        async with clock.running():
            body = first + await response.read()
    # The rest came a few bytes at a time over the fault's seconds.
    assert clock.now - started == pytest.approx(0.5)
    assert json.loads(body)["data"] == traffic_rows(PAID, NOW - MAX_WINDOW_SECONDS, NOW)
    assert fake.requests[-1].kind == "slow_body"


async def test_slow_body_trips_a_read_timeout(fake: FakeApi) -> None:
    # The fake's clock never moves: the body never completes, whatever the machine's load.
    fake.set_fault(Fault.SLOW_BODY, key="key-paid", seconds=2)
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        with pytest.raises(asyncio.TimeoutError):
            await fetch(client, fake, rest_key="key-paid")


async def test_reset_cuts_the_body(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.RESET, key="key-paid")
    async with session.get(fake.url, params={"rest_key": "key-paid"}) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert fake.requests[-1].kind == "reset"


async def test_disconnect_sends_nothing(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.DISCONNECT, key="key-paid")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch(session, fake, rest_key="key-paid")
    # aiohttp retries an idempotent request once by itself after a disconnect, so the fake saw
    # two attempts; with count=1 the client would never notice the fault.
    assert [(r.kind, r.status) for r in fake.requests] == [("disconnect", 0)] * 2
    fake.set_fault(Fault.DISCONNECT, key="key-paid", count=1)
    assert (await fetch(session, fake, rest_key="key-paid"))[0] == 200
    assert [r.kind for r in fake.requests[2:]] == ["disconnect", "success"]


@pytest.mark.parametrize(("params", "status"), [({}, 502), ({"status": 503}, 503)])
async def test_html_5xx(
    fake: FakeApi, session: aiohttp.ClientSession, params: dict[str, int], status: int
) -> None:
    fake.set_fault(Fault.HTML_5XX, **params)
    got, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert got == status
    assert headers["Content-Type"] == "text/html"
    assert body.startswith(b"<html>") and str(status).encode() in body


async def test_rate_limit_with_retry_after_in_seconds(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key="key-paid", retry_after=7)
    status, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, headers["Retry-After"]) == (429, "7")
    assert json.loads(body)["status"] == "error"


async def test_rate_limit_with_retry_after_as_http_date(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key="key-paid", retry_after=90, retry_after_form="http-date")
    status, headers, _ = await fetch(session, fake, rest_key="key-paid")
    assert status == 429
    assert headers["Retry-After"].endswith(" GMT")
    assert email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp() == NOW + 90


async def test_rate_limit_without_retry_after(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.RATE_LIMIT, retry_after=None)
    status, headers, _ = await fetch(session, fake, rest_key="key-paid")
    assert status == 429 and "Retry-After" not in headers


# ---------------------------------------------------------------------------------------------
# Body faults


async def test_truncated_json(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    _, _, whole = await fetch(session, fake, rest_key="key-paid")
    fake.set_fault(Fault.TRUNCATED_JSON, key="key-paid")
    status, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert whole.startswith(body) and 0 < len(body) < len(whole)
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


async def test_wrong_content_type(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.WRONG_CONTENT_TYPE, key="key-paid")
    async with session.get(fake.url, params={"rest_key": "key-paid"}) as response:
        assert response.headers["Content-Type"] == "text/html"
        with pytest.raises(aiohttp.ContentTypeError):
            await response.json()
        assert json.loads(await response.read())["status"] == "success"


async def test_oversize(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.OVERSIZE, key="key-paid")
    status, _, body = await fetch(session, fake, rest_key="key-paid")
    assert status == 200
    assert len(body) > 2 * 1024 * 1024
    payload = json.loads(body)
    assert payload["status"] == "success" and len(payload["data"]) == 4


async def test_invalid_utf8(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.INVALID_UTF8, key="key-paid")
    status, _, body = await fetch(session, fake, rest_key="key-paid")
    assert status == 200
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")


def _expected_rows() -> list[dict[str, object]]:
    return traffic_rows(PAID, NOW - MAX_WINDOW_SECONDS, NOW)


def _check_numbers_as_strings(rows: Any) -> None:
    for row, expected in zip(rows, _expected_rows(), strict=True):
        assert [row[name] for name in COUNTS] == [str(expected[name]) for name in COUNTS]


def _check_negative(rows: Any) -> None:
    assert all(isinstance(row[name], int) and row[name] < 0 for row in rows for name in COUNTS)


def _check_floats(rows: Any) -> None:
    assert all(isinstance(row[name], float) for row in rows for name in COUNTS)
    assert rows[0]["click"] == _expected_rows()[0]["click"] + 0.5


def _check_nan_strings(rows: Any) -> None:
    assert all((r["ctr"], r["cvr"], r["click"]) == ("NaN", "Infinity", "NaN") for r in rows)


def _check_huge(rows: Any) -> None:
    assert all(row["impressions"] == 10**30 and row["revenue"] == 10**30 for row in rows)


def _check_missing(rows: Any) -> None:
    assert rows and all("click" not in row and "impressions" in row for row in rows)


def _check_extra(rows: Any) -> None:
    documented = list(fixture("traffic-source-success.json")["data"][0])
    for row, expected in zip(rows, _expected_rows(), strict=True):
        assert list(row)[: len(documented)] == documented
        assert len(row) > len(documented)
        assert {name: row[name] for name in documented} == expected


def _check_duplicate(rows: Any) -> None:
    names = [row["source_name"] for row in rows]
    assert len(names) == len(set(names)) + 1


def _check_empty(rows: Any) -> None:
    assert rows == []


def _check_not_list(rows: Any) -> None:
    assert rows == {}


def _check_rates_as_numbers(rows: Any) -> None:
    for row, expected in zip(rows, _expected_rows(), strict=True):
        assert isinstance(row["ctr"], float) and isinstance(row["cvr"], float)
        assert row["ctr"] == float(str(expected["ctr"]))


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault.NUMBERS_AS_STRINGS, _check_numbers_as_strings),
        (Fault.NEGATIVE_NUMBERS, _check_negative),
        (Fault.FLOATS_FOR_INTS, _check_floats),
        (Fault.NAN_STRINGS, _check_nan_strings),
        (Fault.HUGE_INTEGERS, _check_huge),
        (Fault.MISSING_FIELDS, _check_missing),
        (Fault.EXTRA_FIELDS, _check_extra),
        (Fault.DUPLICATE_SOURCES, _check_duplicate),
        (Fault.EMPTY_DATA, _check_empty),
        (Fault.DATA_NOT_LIST, _check_not_list),
        (Fault.RATES_AS_NUMBERS, _check_rates_as_numbers),
    ],
)
async def test_data_faults(
    fake: FakeApi, session: aiohttp.ClientSession, fault: Fault, check: Any
) -> None:
    fake.set_fault(fault, key="key-paid")
    status, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    payload = json.loads(body)
    assert payload["status"] == "success"
    check(payload["data"])
    assert fake.requests[-1].kind == fault.value


async def test_nan_as_bare_json_tokens(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.NAN_STRINGS, key="key-paid", bare=True)
    _, _, body = await fetch(session, fake, rest_key="key-paid")
    assert b'"ctr": NaN' in body and b'"cvr": Infinity' in body
    row = json.loads(body)["data"][0]
    assert math.isnan(row["ctr"]) and math.isinf(row["cvr"]) and math.isnan(row["click"])


async def test_missing_fields_can_name_the_fields(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.MISSING_FIELDS, key="key-paid", fields=("ctr", "order"))
    rows = await fetch_rows(session, fake, rest_key="key-paid")
    assert all("ctr" not in row and "order" not in row and "click" in row for row in rows)


async def test_data_faults_leave_vendor_errors_alone(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    fake.set_fault(Fault.EMPTY_DATA)
    _, _, body = await fetch(session, fake, rest_key="no-such-key")
    assert body == fixture_bytes("error-invalid-key.json")


@pytest.mark.parametrize(
    ("fault", "fixture_name"),
    [
        (Fault.INVALID_KEY, "error-invalid-key.json"),
        (Fault.ACCOUNT_INACTIVE, "error-account-inactive.json"),
        (Fault.INTERVAL_TOO_LONG, "error-interval-too-long.json"),
        (Fault.VALIDATION_FAILED, "fail-date-from-required.json"),
        (Fault.SOMETHING_WENT_WRONG, "error-something-went-wrong.json"),
    ],
)
async def test_vendor_errors_on_demand(
    fake: FakeApi, session: aiohttp.ClientSession, fault: Fault, fixture_name: str
) -> None:
    fake.set_fault(fault, key="key-paid")
    status, headers, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, headers["Content-Type"], body) == (
        200,
        "application/json",
        fixture_bytes(fixture_name),
    )
    fake.error_status = 401
    assert (await fetch(session, fake, rest_key="key-paid"))[0] == 401
    fake.set_fault(fault, key="key-paid", status=503)
    status, _, body = await fetch(session, fake, rest_key="key-paid")
    assert (status, body) == (503, fixture_bytes(fixture_name))


# ---------------------------------------------------------------------------------------------
# Fault scope, healing and validation


async def test_fault_scope_per_key_and_global(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    async def status_of(key: str) -> int:
        return (await fetch(session, fake, rest_key=key))[0]

    fake.set_fault(Fault.HTML_5XX, key="key-paid")
    assert (await status_of("key-paid"), await status_of("key-sms")) == (502, 200)
    fake.set_fault(Fault.RATE_LIMIT)
    assert (await status_of("key-paid"), await status_of("key-sms")) == (502, 429)
    assert await status_of("no-such-key") == 429  # global means every request
    fake.set_fault(None, key="key-paid")
    assert await status_of("key-paid") == 429
    fake.set_fault(None)
    assert await status_of("key-paid") == 200
    fake.set_fault(Fault.HTML_5XX, key="key-paid")
    fake.set_fault(Fault.HTML_5XX)
    fake.clear_faults()
    assert (await status_of("key-paid"), await status_of("key-sms")) == (200, 200)


async def test_count_heals_after_n_requests(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    fake.set_fault(Fault.HTML_5XX, key="key-paid", count=2)
    fake.set_fault(Fault.RATE_LIMIT, count=1)
    statuses = [(await fetch(session, fake, rest_key="key-paid"))[0] for _ in range(4)]
    # The key's own fault wins while it lasts; then the global one applies, once.
    assert statuses == [502, 502, 429, 200]
    assert (await fetch(session, fake, rest_key="key-sms"))[0] == 200
    assert [r.fault for r in fake.requests_for("key-paid")] == [
        Fault.HTML_5XX,
        Fault.HTML_5XX,
        Fault.RATE_LIMIT,
        None,
    ]


def test_fault_parameters_are_checked() -> None:
    api = FakeApi()
    with pytest.raises(TypeError, match="retry_after"):
        api.set_fault(Fault.HANG, retry_after=3)
    with pytest.raises(ValueError, match="retry_after_form"):
        api.set_fault(Fault.RATE_LIMIT, retry_after_form="minutes")
    with pytest.raises(ValueError, match="count"):
        api.set_fault(Fault.RESET, count=0)
    with pytest.raises(TypeError):
        api.set_fault(None, count=1)
    api.set_fault(Fault.SLOW_BODY, key="k", seconds=0.1, chunk_size=4, count=3)


# ---------------------------------------------------------------------------------------------
# Listening, concurrency, latency, bookkeeping


async def test_stop_and_resume_listening(fake: FakeApi, session: aiohttp.ClientSession) -> None:
    url = fake.url
    assert (await fetch(session, fake, rest_key="key-paid"))[0] == 200  # leaves a kept-alive conn
    await fake.stop_listening()
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(session, fake, rest_key="key-paid")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=1).close()
    await fake.resume_listening()
    assert fake.url == url
    assert (await fetch(session, fake, rest_key="key-paid"))[0] == 200


@pytest.mark.parametrize("client_limit", [5, 20])
async def test_max_in_flight_counts_concurrent_requests(
    client_limit: int, clock: ManualClock
) -> None:
    api = FakeApi([PAID], latency=0.1, monotonic=clock.monotonic, sleep=clock.sleep)
    async with api:
        connector = aiohttp.TCPConnector(limit=client_limit)
        async with aiohttp.ClientSession(connector=connector) as client:
            requests = [fetch(client, api, rest_key="key-paid") for _ in range(20)]
            answers = asyncio.gather(*requests)
            # Every connection the client may open has a request waiting on the latency.
            await api.wait_until(lambda: api.in_flight == client_limit)
            async with clock.running():
                await answers
        assert api.max_in_flight == client_limit
        assert api.in_flight == 0
        api.clear_requests()
        assert (api.requests, api.max_in_flight) == ([], 0)


async def test_latency_is_added_and_settable(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """The answer comes ``latency`` seconds after the request, on the fake's clock."""
    api = FakeApi([PAID], latency=0.3, monotonic=clock.monotonic, sleep=clock.sleep)
    async with api, clock.running():
        await fetch(session, api, rest_key="key-paid")
        assert clock.now - api.requests[-1].time == pytest.approx(0.3)
        api.set_fault(Fault.RATE_LIMIT, key="key-paid")  # faults answer after it too
        assert (await fetch(session, api, rest_key="key-paid"))[0] == 429
        assert clock.now - api.requests[-1].time == pytest.approx(0.3)
        api.latency = 0.0
        await fetch(session, api, rest_key="key-paid")
        assert clock.now == api.requests[-1].time


async def test_a_client_that_leaves_is_not_answered_later(
    fake: FakeApi, clock: ManualClock
) -> None:
    """aiohttp's server with handler_cancellation: a client's leaving ends its requests."""
    fake.latency = 0.3
    _, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    writer.write(f"GET {ENDPOINT_PATH}?rest_key=key-paid HTTP/1.1\r\nHost: fake\r\n\r\n".encode())
    await writer.drain()
    await fake.wait_until(lambda: fake.in_flight == 1)
    writer.close()
    await fake.wait_until(lambda: fake.in_flight == 0)
    clock.advance(1.0)  # past the latency: the abandoned answer is not sent
    assert [r.status for r in fake.requests] == [0]


async def test_requests_are_recorded_as_received(
    fake: FakeApi, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    started = clock.now
    await fetch(session, fake, rest_key="key-paid", date_from="17", date_to="x")
    clock.advance(1.5)
    await fetch(session, fake, rest_key="key-sms")
    clock.advance(2.0)
    await fetch(session, fake, rest_key="key-paid", date_to="5")
    first, second, third = fake.requests
    assert (first.rest_key, first.date_from, first.date_to) == ("key-paid", "17", "x")
    assert (first.kind, first.status, first.window) == ("something_went_wrong", 200, None)
    assert (second.date_from, second.date_to, second.kind) == (None, None, "success")
    assert third.kind == "validation_failed"
    # Each stamped on arrival by the fake's monotonic clock.
    assert [r.time - started for r in fake.requests] == [0.0, 1.5, 3.5]
    assert (fake.count(), fake.count("key-paid"), fake.count("nobody")) == (3, 2, 0)
    assert fake.requests_for("key-paid") == [first, third]


async def test_accounts_can_change_at_runtime(
    fake: FakeApi, session: aiohttp.ClientSession
) -> None:
    async def message(key: str) -> object:
        return json.loads((await fetch(session, fake, rest_key=key))[2]).get("message")

    fake.add_account(FakeAccount("key-new", seed=9))
    assert await message("key-new") is None  # success
    fake.set_state("key-new", AccountState.CLOSED)
    assert await message("key-new") == "Your account is not active!"
    fake.set_state("key-new", AccountState.SUSPENDED)
    assert await message("key-new") is None
    fake.remove_account("key-new")
    assert await message("key-new") == "Incorrect rest key!"
    assert "key-new" not in fake.accounts
    with pytest.raises(KeyError):
        fake.remove_account("key-new")


def test_demo_accounts() -> None:
    accounts = {account.rest_key: account for account in demo_accounts()}
    assert {
        key: (a.state, a.seed) for key, a in accounts.items() if key != "demo-key-inactive"
    } == {
        "demo-key-fashion": (AccountState.PAID, 1),
        "demo-key-electronics": (AccountState.PAID, 2),
        "demo-key-garden": (AccountState.PAYMENT_ERROR, 3),
    }
    assert accounts["demo-key-inactive"].state is AccountState.INACTIVE
    assert accounts["demo-key-garden"].sources == (*DOCUMENTED_SOURCES, "SMS")
    assert DEMO_REVOKED_KEY == "demo-key-revoked" and DEMO_REVOKED_KEY not in accounts
    assert [a.rest_key for a in generated_accounts(3)] == ["key-00000", "key-00001", "key-00002"]


def test_main_serves_until_interrupted_and_writes_its_record(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record = tmp_path / "fake.records"
    command = [sys.executable, "-m", "exporter.fakeapi", "--port", str(port), "--accounts", "3"]
    command += ["--record", str(record)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            url = f"http://127.0.0.1:{port}{ENDPOINT_PATH}"
            assert url in line and "3 accounts" in line
            with urllib.request.urlopen(f"{url}?rest_key=key-00002", timeout=5) as response:
                body = json.loads(response.read())
            assert body["status"] == "success" and len(body["data"]) == 4
            with urllib.request.urlopen(f"{url}?rest_key=nobody", timeout=5) as response:
                assert json.loads(response.read())["message"] == "Incorrect rest key!"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    # One line per request answered, written when it stopped: time (monotonic), key, status.
    lines = [line.split() for line in record.read_text().splitlines()]
    assert [(key, status) for _, key, status in lines] == [("key-00002", "200"), ("nobody", "200")]
    assert float(lines[0][0]) <= float(lines[1][0])


def test_main_with_a_fault_misbehaves_on_every_request() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "exporter.fakeapi", "--port", str(port)]
    command += ["--fault", "something_went_wrong"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            assert "4 accounts" in process.stdout.readline()  # the demo ones
            url = f"http://127.0.0.1:{port}{ENDPOINT_PATH}?rest_key=demo-key-fashion"
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
            assert body == {"status": "error", "message": "Something went wrong"}
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_a_record_needs_a_single_worker() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "8080", "--workers", "2", "--record", "/dev/null"])
    assert exit_info.value.code == 2


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT and /proc: Linux")
def test_workers_share_the_port_and_stop_together() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "exporter.fakeapi", "--port", str(port), "--accounts", "3"]
    command += ["--workers", "3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]  # one per worker
            assert all("3 accounts" in line for line in lines), lines
            workers = _children(process.pid)
            assert len(workers) == 2
            url = f"http://127.0.0.1:{port}{ENDPOINT_PATH}?rest_key=key-00001"
            for _ in range(12):  # a new connection each: the kernel spreads them
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert json.loads(response.read())["status"] == "success"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
            for worker in workers:  # stopped with it, not left behind
                assert not Path(f"/proc/{worker}").exists() or _zombie(worker)
        finally:
            if process.poll() is None:
                process.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_main_rejects_bad_flags() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--latency", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "no_such_fault"])
    assert exit_info.value.code == 2
    for flags in (["--workers", "0", "--port", "1"], ["--workers", "2", "--port", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(flags)
        assert exit_info.value.code == 2
