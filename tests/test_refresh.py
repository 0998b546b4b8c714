"""A refresh per window: which windows a poll asks for, over many polls on the injected clock.

The pure decision first (``exporter.refresh``), then the poller against the local fake API on a
``FakeClock``: the requests that really went out, window by window, when, and what the
exposition says meanwhile.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from conftest import Clients
from fakeclock import FakeClock, RecordingClient, Sent
from test_poller import make_config, started_fake

from exporter.config import RestKey
from exporter.errors import ApiError, ApiErrorReason
from exporter.fakeapi import Fault
from exporter.metrics import AccountsExposition, number
from exporter.poller import Poller
from exporter.refresh import (
    LastAnswer,
    due_windows,
    polls_per_refresh,
    requests_per_day,
    window_due,
)
from exporter.store import SnapshotStore
from exporter.window import Window

THIRTY_DAYS = 30 * 86400
HOUR = 3600.0
START, WALL = 1000.0, 1_800_000_000.0  # the fake clock's monotonic and wall time at start
WITH_30D_HOURLY = ["24h", {"window": "30d", "refresh": "1h"}]


def window(text: str, refresh: float | None = None) -> Window:
    return replace(Window.parse(text), refresh=refresh)


@pytest.mark.parametrize(
    ("refresh", "interval", "polls"),
    [(3600, 300, 12), (300, 300, 1), (420, 300, 1), (450, 300, 1), (460, 300, 2), (7200, 600, 12)],
)
def test_refresh_counts_in_whole_polls_rounded_to_the_nearest(
    refresh: float, interval: float, polls: int
) -> None:
    assert polls_per_refresh(refresh, interval) == polls


def test_a_window_is_due_once_its_refresh_has_nearly_passed_or_it_failed() -> None:
    w = window("30d", refresh=HOUR)
    asked = LastAnswer(fetched_at=10_000.0, date_from=0)

    def due(after: float, *, failed: bool = False) -> bool:
        return window_due(
            w, interval=300, last=asked, failed=failed, now=10_000 + after, end_offset=0
        )

    assert not due(300)
    assert not due(11 * 300)  # the 11th poll after: still fresh
    assert due(12 * 300 - 5)  # the 12th, even a little early (jitter, answer time)
    assert due(300, failed=True)  # its latest request failed: asked at the next poll
    assert window_due(w, interval=300, last=None, failed=False, now=0, end_offset=0)
    every_poll = window("24h")
    assert window_due(every_poll, interval=300, last=asked, failed=False, now=10_001, end_offset=0)


def test_yesterday_is_asked_again_when_the_day_changes() -> None:
    yesterday = Window.parse("yesterday")
    midnight = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    date_from, _ = yesterday.bounds(midnight - 600, 0)
    last = {"yesterday": LastAnswer(midnight - 600, date_from)}

    def due_at(now: float) -> bool:
        return bool(
            due_windows([yesterday], interval=300, last=last, failed=(), now=now, end_offset=0)
        )

    assert not due_at(midnight - 1)
    assert due_at(midnight + 1)  # ten minutes after the last answer, but a new day
    assert not due_at(midnight + 1 - 3600)


def test_requests_per_day() -> None:
    assert requests_per_day([window("24h"), window("30d")], 300) == 576
    assert requests_per_day([window("24h"), window("30d", HOUR)], 300) == 288 + 24
    assert requests_per_day([Window.parse("yesterday")], 300) == 24
    assert requests_per_day([window("today", 7 * HOUR)], 300) == 4  # 00, 07, 14, 21 h
    assert requests_per_day([window("24h")], 900) == 96


# -- the poller on the injected clock ------------------------------------------------------------


class FailingWindow(RecordingClient):
    """Records every request; the 30d requests numbered in ``fail`` (from 0) fail."""

    fail: set[int] = set()

    async def fetch(self, key: RestKey, date_from: int, date_to: int) -> Any:
        if date_to - date_from == THIRTY_DAYS and len(asks(self, THIRTY_DAYS)) in self.fail:
            self.sent.append(Sent(self.clock.monotonic(), key.reveal(), date_from, date_to))
            raise ApiError(ApiErrorReason.HTTP_ERROR, "HTTP 503 without an API body")
        return await super().fetch(key, date_from, date_to)


def asks(client: RecordingClient, span: int) -> list[float]:
    return [s.at for s in client.sent if s.date_to - s.date_from == span]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in pairwise(times)]


def exposed(store: SnapshotStore, clock: FakeClock, name: str) -> list[str]:
    body = AccountsExposition().render(store, clock.time()).decode()
    return [line for line in body.splitlines() if line.startswith(name)]


async def test_refresh_cadence_over_many_polls_with_failures(clients: Clients) -> None:
    """30d hourly at a 5-minute interval: every 12th poll; a failed 30d request is asked again
    at the next poll (retargeting_up 0 meanwhile), and its hour counts from the success."""
    fake = await started_fake(["a"])
    clock, store = FakeClock(start=START, wall=WALL), SnapshotStore()
    try:
        config = make_config(fake.url, ["a"], windows=WITH_30D_HOURLY)
        client = FailingWindow(clients.for_api(config.api), clock)
        client.fail = {2, 3}
        poller = Poller(config, client, store, clock=clock)  # type: ignore[arg-type]
        poller.start()
        await clock.advance(0)
        ups: list[str] = []
        while len(asks(client, THIRTY_DAYS)) < 7 and clock.monotonic() < 12 * HOUR:
            await clock.advance(300)
            ups.extend(exposed(store, clock, "retargeting_up"))
        last_30d = exposed(store, clock, "retargeting_window_last_success_timestamp_seconds")
        await poller.stop()
    finally:
        await fake.close()
    thirty = asks(client, THIRTY_DAYS)
    first, *later = gaps(thirty)
    # The second poll comes at the account's phase, 0.5 to 1.5 intervals after the first, so
    # the first refresh is at the poll nearest to an hour after start-up.
    assert 3450 <= first < 3750
    assert later == [3600, 300, 300, 3600, 3600]
    day = asks(client, 86400)
    assert gaps(day)[1:] == [300] * (len(day) - 2)  # 24h: every poll
    assert ups.count('retargeting_up{account="a"} 0') == 2  # the two polls whose 30d failed
    assert ups[-1] == 'retargeting_up{account="a"} 1'
    assert last_30d == [
        f'retargeting_window_last_success_timestamp_seconds{{account="a",window="{w}"}} '
        f"{number(t + (WALL - START))}"
        for w, t in (("24h", day[-1]), ("30d", thirty[-1]))
    ]
    # Only the successful requests reached the fake; those and the recorded ones agree.
    assert fake.count() == len(client.sent) - 2


async def test_a_reload_that_changes_refresh_applies_from_the_next_poll(clients: Clients) -> None:
    fake = await started_fake(["a"])
    clock = FakeClock()
    try:
        hourly = make_config(fake.url, ["a"], windows=[{"window": "30d", "refresh": "1h"}])
        client = RecordingClient(clients.for_api(hourly.api), clock)
        poller = Poller(hourly, client, SnapshotStore(), clock=clock)  # type: ignore[arg-type]
        poller.start()
        while len(asks(client, THIRTY_DAYS)) < 3 and clock.monotonic() < 12 * HOUR:
            await clock.advance(300)
        changed = poller.apply(
            make_config(fake.url, ["a"], windows=[{"window": "30d", "refresh": "2h"}])
        )
        assert changed["changed"] == ["a"]
        while len(asks(client, THIRTY_DAYS)) < 5 and clock.monotonic() < 12 * HOUR:
            await clock.advance(300)
        poller.apply(make_config(fake.url, ["a"], windows=["30d"]))  # every poll again
        await clock.advance(900)
        await poller.stop()
    finally:
        await fake.close()
    times = asks(client, THIRTY_DAYS)
    assert gaps(times)[1:4] == [3600, 7200, 7200]
    assert len(times) == 5 + 3 and gaps(times)[5:] == [300, 300]  # every poll again


async def test_yesterday_hourly_and_again_after_midnight(clients: Clients) -> None:
    """``yesterday`` by default: hourly, and at the first poll of a new day (local midnight in
    its time zone), which asks for the day that just closed."""
    midnight = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
    fake = await started_fake(["a"])
    clock = FakeClock(start=1000.0, wall=midnight - 50 * 60)  # 23:10
    try:
        config = make_config(fake.url, ["a"], windows=["1h", "yesterday"])
        client = RecordingClient(clients.for_api(config.api), clock)
        poller = Poller(config, client, SnapshotStore(), clock=clock)  # type: ignore[arg-type]
        poller.start()
        await clock.advance(3 * HOUR)
        await poller.stop()
    finally:
        await fake.close()
    offset = midnight - 50 * 60 - 1000.0
    yesterday = [s for s in client.sent if s.date_to - s.date_from == 86400]
    at = [s.at + offset for s in yesterday]
    assert at[0] == midnight - 50 * 60
    assert midnight <= at[1] < midnight + 300  # the first poll of the new day
    assert gaps(at)[1:] == [3600, 3600]
    assert [s.date_to for s in yesterday] == [midnight - 86400, midnight, midnight, midnight]


async def test_each_window_goes_stale_from_its_own_last_success(clients: Clients) -> None:
    """The API fails from the second poll on. 24h (every poll, stale_after 15m) disappears
    15 minutes after its last success; 30d, refreshed hourly, keeps the same 10-minute margin
    past its next refresh: 70 minutes. Their last-success times stay exported."""
    fake = await started_fake(["a"])
    clock, store = FakeClock(start=START, wall=WALL), SnapshotStore()
    try:
        config = make_config(fake.url, ["a"], windows=WITH_30D_HOURLY)
        client = RecordingClient(clients.for_api(config.api), clock)
        poller = Poller(config, client, store, clock=clock)  # type: ignore[arg-type]
        poller.start()
        await clock.advance(0)
        fake.set_fault(Fault.HTML_5XX)
        shown = {}
        for minutes in (14, 16, 69, 71):
            await clock.advance(minutes * 60 - (clock.monotonic() - START))
            windows = {
                line.split('window="')[1].split('"')[0]
                for line in exposed(store, clock, "retargeting_impressions")
            }
            shown[minutes] = sorted(windows)
        last = exposed(store, clock, "retargeting_window_last_success_timestamp_seconds")
        await poller.stop()
    finally:
        await fake.close()
    assert shown == {14: ["24h", "30d"], 16: ["30d"], 69: ["30d"], 71: []}
    assert [line.rsplit(" ", 1)[1] for line in last] == [number(WALL), number(WALL)]
