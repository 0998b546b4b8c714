"""The poller against the real local fake API: limits, spreading, windows, state changes.

Scheduling runs on a ``FakeClock``: requests are recorded when they go out, on that clock.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from conftest import Clients
from fakeclock import FakeClock, RecordingClient
from test_faults import wait_for

import exporter.poller
from exporter.config import Config, parse_config
from exporter.errors import ApiError, ApiErrorReason
from exporter.fakeapi import DOCUMENTED_SOURCES, AccountState, FakeAccount, FakeApi, Fault
from exporter.fetch import RequestLimit
from exporter.poller import Poller
from exporter.schedule import phase
from exporter.store import SnapshotStore


def make_config(url: str, names: list[str], interval: float | None = None, **top: Any) -> Config:
    data: dict[str, Any] = {
        "api": {"url": url, "timeout": "2s", "retries": {"attempts": 1}},
        "accounts": [{"name": n, "rest_key_env": f"K_{i}"} for i, n in enumerate(names)],
        **top,
    }
    config = parse_config(data, env={f"K_{i}": f"key-{n}" for i, n in enumerate(names)})
    if interval is not None:  # set directly: the config's minimum is 30 s
        accounts = tuple(
            replace(a, interval=interval, stale_after=3 * interval) for a in config.accounts
        )
        config = replace(config, accounts=accounts)
    return config


async def started_fake(names: list[str], **kwargs: Any) -> FakeApi:
    fake = FakeApi([FakeAccount(f"key-{n}", seed=i) for i, n in enumerate(names)], **kwargs)
    await fake.start()
    return fake


def poller_for(config: Config, clients: Clients, store: SnapshotStore) -> Poller:
    return Poller(config, clients.for_api(config.api), store)


def clocked_poller(
    config: Config, clients: Clients, store: SnapshotStore, clock: FakeClock, **kwargs: Any
) -> tuple[Poller, RecordingClient]:
    """A poller on ``clock`` whose requests are recorded when they go out."""
    client = RecordingClient(clients.for_api(config.api), clock)
    return Poller(config, client, store, clock=clock, **kwargs), client  # type: ignore[arg-type]


async def test_concurrency_limit_is_shared_across_accounts(clients: Clients) -> None:
    names = [f"shop-{i}" for i in range(12)]
    fake = await started_fake(names, latency=0.15)
    try:
        config = make_config(fake.url, names)
        config = replace(config, api=replace(config.api, max_concurrency=3))
        poller = poller_for(config, clients, SnapshotStore())
        snapshots = await poller.poll_all_once()
    finally:
        await fake.close()
    assert all(s.up for s in snapshots)
    assert fake.count() == 24  # 12 accounts x 2 windows
    assert fake.max_in_flight == 3


async def test_an_accounts_windows_go_out_together_and_are_cancelled_together(
    clients: Clients,
) -> None:
    """Three windows of one account are in flight at once, results in the configured order;
    cancelling the poll cancels every window's request (none is left running)."""
    fake = await started_fake(["a"], latency=0.2)
    try:
        config = make_config(fake.url, ["a"], windows=["30d", "1h", "7d"])
        # The requests would hang for a minute: only cancelling them can end them sooner.
        config = replace(config, api=replace(config.api, timeout=60.0))
        poller = poller_for(config, clients, SnapshotStore())
        snapshot = await poller.poll(config.accounts[0])
        assert fake.max_in_flight == 3
        assert [f.window for f in snapshot.figures] == ["30d", "1h", "7d"]

        fake.set_fault(Fault.HANG)
        poll = asyncio.create_task(poller.poll(config.accounts[0]))
        await wait_for(lambda: fake.in_flight == 3, 5.0, "three requests in flight")
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        await wait_for(lambda: fake.in_flight == 0, 10.0, "every request cancelled")
    finally:
        await fake.close()


async def test_windows_are_requested_ending_now_minus_end_offset(
    clients: Clients,
) -> None:
    fake = await started_fake(["a"])
    clock = FakeClock()
    try:
        config = make_config(fake.url, ["a"], windows=["1h", "30d"], polling={"end_offset": "10m"})
        poller, _ = clocked_poller(config, clients, SnapshotStore(), clock)
        await poller.poll(config.accounts[0])
    finally:
        await fake.close()
    spans = sorted(int(r.date_to) - int(r.date_from) for r in fake.requests)  # type: ignore[arg-type]
    assert spans == [3600, 30 * 86400]
    for request in fake.requests:
        assert int(request.date_to) == int(clock.time()) - 600  # type: ignore[arg-type]


async def test_snapshot_after_success_and_failures(clients: Clients) -> None:
    fake = await started_fake(["good", "bad"])
    store = SnapshotStore()
    try:
        config = make_config(fake.url, ["good", "bad"])
        poller = poller_for(config, clients, store)
        good, bad = config.accounts
        fake.set_state("key-bad", AccountState.INACTIVE)
        await poller.poll_all_once()
        assert store.get("good").up and store.get("good").active  # type: ignore[union-attr]
        snapshot = store.get("bad")
        assert snapshot is not None and snapshot.polled and not snapshot.up
        assert snapshot.active is False and snapshot.last_error is ApiErrorReason.ACCOUNT_INACTIVE
        assert snapshot.errors_total[ApiErrorReason.ACCOUNT_INACTIVE] == 2  # both windows
        assert snapshot.requests_total == 2 and snapshot.last_success is None
        # Reactivated: the next poll recovers by itself.
        fake.set_state("key-bad", AccountState.PAID)
        snapshot = await poller.poll(bad)
        assert snapshot.up and snapshot.active is True and snapshot.last_error is None
        assert snapshot.requests_total == 4
        assert {f.window for f in snapshot.figures} == {"24h", "30d"}
        # A failing poll: up drops, and the figures of the last success are kept (they vanish
        # from /metrics only after stale_after, see test_metrics).
        before = store.get("good")
        assert before is not None
        fake.set_fault(Fault.HTML_5XX, key="key-good")
        snapshot = await poller.poll(good)
        assert not snapshot.up and snapshot.last_error is ApiErrorReason.HTTP_ERROR
        assert snapshot.active is True  # a 502 says nothing about the account
        assert snapshot.figures == before.figures
        assert snapshot.last_success == before.last_success
    finally:
        await fake.close()


async def test_state_changes_are_logged_once(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    fake = await started_fake(["a"])
    try:
        config = make_config(fake.url, ["a"])
        poller = poller_for(config, clients, SnapshotStore())
        account = config.accounts[0]
        caplog.set_level(logging.INFO, logger="exporter.poller")
        fake.set_fault(Fault.INVALID_KEY, key="key-a")
        for _ in range(3):
            await poller.poll(account)
        fake.set_fault(Fault.ACCOUNT_INACTIVE, key="key-a")
        for _ in range(2):
            await poller.poll(account)
        fake.set_fault(None, key="key-a")
        for _ in range(2):
            await poller.poll(account)
    finally:
        await fake.close()
    messages = [(r.getMessage(), getattr(r, "reason", None)) for r in caplog.records]
    assert messages == [
        ("account down", "invalid_key"),
        ("every account polled once", None),
        ("account failure reason changed", "account_inactive"),
        ("account recovered", None),
    ]


async def test_unexpected_error_is_counted_and_the_loop_goes_on(
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = await started_fake(["a"])
    clock = FakeClock()
    try:
        config = make_config(fake.url, ["a"], interval=30)
        store = SnapshotStore()
        poller, client = clocked_poller(config, clients, store, clock)
        calls = 0
        original = exporter.poller.next_snapshot

        def flaky(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return original(*args, **kwargs)

        monkeypatch.setattr(exporter.poller, "next_snapshot", flaky)
        poller.start()
        await clock.advance(0)
        assert not store.get("a").polled  # type: ignore[union-attr]
        assert (
            poller.self_metrics.registry.get_sample_value(
                "retargeting_exporter_internal_errors_total"
            )
            == 1
        )
        await clock.advance(45)  # the next poll comes in the account's slot all the same
        assert poller.healthy()
        await poller.stop()
    finally:
        await fake.close()
    assert (
        poller.self_metrics.registry.get_sample_value("retargeting_exporter_internal_errors_total")
        == 1
    )
    assert store.get("a").up  # type: ignore[union-attr]
    assert len(client.sent) == 4  # two polls of two windows
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


async def test_later_polls_are_spread_over_the_interval(clients: Clients) -> None:
    names = [f"shop-{i}" for i in range(6)]
    interval = 60.0
    fake = await started_fake(names)
    clock = FakeClock()
    try:
        config = make_config(fake.url, names, interval=interval, windows=["24h"])
        poller, client = clocked_poller(config, clients, SnapshotStore(), clock)
        start = clock.monotonic()
        poller.start()
        assert not poller.ready()
        await clock.advance(interval * 2.6)
        assert poller.ready()
        await poller.stop()
    finally:
        await fake.close()
    for name in names:
        times = [t - start for t in client.times(f"key-{name}")]
        # First poll at start-up, then at the account's phase, then every interval: no more.
        slots = [interval * (0.5 + phase(name) + k) for k in range(3)]
        expected = [0.0, *(t for t in slots if t <= interval * 2.6)]
        assert times == pytest.approx(expected, abs=1e-9)
    assert fake.count() == len(client.sent)  # every request recorded reached the fake
    phases = sorted(phase(n) for n in names)
    assert phases[-1] - phases[0] > 0.3  # the accounts really are spread


async def test_sources_over_the_cap_are_dropped_documented_first(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeApi([FakeAccount("key-a", sources=("Zeta", "SMS", *DOCUMENTED_SOURCES))])
    await fake.start()
    try:
        config = make_config(fake.url, ["a"], max_sources_per_account=5, windows=["24h"])
        poller = poller_for(config, clients, SnapshotStore())
        snapshot = await poller.poll(config.accounts[0])
        await poller.poll(config.accounts[0])
    finally:
        await fake.close()
    (figures,) = snapshot.figures
    names = [r.source_name for r in figures.rows]
    assert names == [*DOCUMENTED_SOURCES, "SMS"]
    assert snapshot.dropped_sources == 1
    assert [r.getMessage() for r in caplog.records].count(
        "more traffic sources than max_sources_per_account; extra sources not exported"
    ) == 1


async def test_stop_cancels_hanging_requests_quickly(clients: Clients) -> None:
    fake = await started_fake(["a"])
    fake.set_fault(Fault.HANG)
    clock = FakeClock()
    try:
        config = make_config(fake.url, ["a"])
        config = replace(config, api=replace(config.api, timeout=600.0))  # never, in this test
        inner = clients.for_api(config.api)
        client = RecordingClient(inner, clock, hanging=("key-a",))
        poller = Poller(config, client, SnapshotStore(), clock=clock)  # type: ignore[arg-type]
        poller.start()
        await wait_for(lambda: fake.in_flight == 2, 10.0, "both windows hanging")
        # Stopping does not wait for the hanging requests: it cancels them.
        await asyncio.wait_for(poller.stop(), 60.0)
        await wait_for(lambda: fake.in_flight == 0, 10.0, "every request cancelled")
        assert not poller.healthy()
    finally:
        await fake.close()


def test_api_error_is_not_a_valueerror() -> None:
    # The poller catches ApiError per window; anything else is a bug and counted as such.
    assert not issubclass(ApiError, ValueError)


async def test_many_accounts_are_admitted_a_bounded_number_at_a_time(
    clients: Clients,
) -> None:
    # Thousands of accounts are due at start-up. Polls start only while fewer than twice the
    # request limit are under way (the others wait as heap entries, not as tasks), every account
    # is polled, the poller is healthy throughout, and stop leaves nothing running.
    names = [f"shop-{i}" for i in range(450)]
    fake = await started_fake(names, latency=0.02)

    def polls() -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("poll shop-"))

    try:
        config = make_config(fake.url, names, windows=["24h"])
        config = replace(config, api=replace(config.api, max_concurrency=10))
        clock = FakeClock()
        most = 0

        class Sampling(RecordingClient):
            async def fetch(self, *args: Any) -> Any:  # as each request goes out
                nonlocal most
                most = max(most, polls())
                return await super().fetch(*args)

        client = Sampling(clients.for_api(config.api), clock)
        poller = Poller(config, client, SnapshotStore(), clock=clock)  # type: ignore[arg-type]
        poller.start()
        assert poller.healthy()
        await clock.advance(0)  # the first round: all due now
        assert poller.ready() and poller.healthy()
        assert 10 < most <= 20  # busier than the request limit, never above twice it
        assert fake.max_in_flight == 10
        await poller.stop()
        assert polls() == 0 and not poller.healthy()
        # Stopped right after starting: nothing is left running.
        poller = poller_for(config, clients, SnapshotStore())
        poller.start()
        await asyncio.sleep(0)
        await poller.stop()
        await asyncio.sleep(0)
        assert polls() == 0
    finally:
        await fake.close()
    assert len({r.rest_key for r in fake.requests}) == len(names)


async def test_start_up_is_summed_up_in_one_line(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    # Thousands of accounts must not mean thousands of info lines at start-up: a first success
    # is logged at debug, failures at warning as ever, and one line sums up the first round.
    caplog.set_level(logging.INFO, logger="exporter.poller")
    names = ["a", "b", "c"]
    fake = await started_fake(names)
    fake.set_fault(Fault.INVALID_KEY, key="key-b")
    try:
        config = make_config(fake.url, names)
        poller = poller_for(config, clients, SnapshotStore())
        await poller.poll_all_once()
        await poller.poll_all_once()  # a second round says nothing new
    finally:
        await fake.close()
    records = [(r.getMessage(), r.__dict__) for r in caplog.records]
    assert [m for m, _ in records] == ["account down", "every account polled once"]
    summary = records[1][1]
    assert (summary["accounts"], summary["up"], summary["down"]) == (3, 2, 1)
    assert summary["seconds"] >= 0


async def test_ready_follows_added_and_removed_accounts(clients: Clients) -> None:
    fake = await started_fake(["a", "b", "c"])
    try:
        config = make_config(fake.url, ["a", "b"])
        poller = poller_for(config, clients, SnapshotStore())
        assert not poller.ready()
        await poller.poll_all_once()
        assert poller.ready()
        bigger = make_config(fake.url, ["a", "b", "c"])
        poller.apply(bigger)  # c is new: not polled yet
        assert not poller.ready()
        await poller.poll(bigger.accounts[2])
        assert poller.ready()
        poller.apply(make_config(fake.url, ["a", "b", "d"]))  # d never polled
        assert not poller.ready()
        poller.apply(make_config(fake.url, ["a", "b"]))  # d removed before its first poll
        assert poller.ready()
    finally:
        await fake.close()


@pytest.mark.parametrize(("answer_seconds", "warned"), [(20.0, True), (10.0, False)])
async def test_a_first_round_longer_than_the_interval_is_warned_about_once(
    clients: Clients, caplog: pytest.LogCaptureFixture, answer_seconds: float, warned: bool
) -> None:
    """One request at a time and two accounts of one window: the first round takes two answers.
    Past the 30 s interval, the user is told that accounts are polled less often than asked."""
    names = ["a", "b"]
    fake = await started_fake(names)
    clock = FakeClock()

    class SlowVendor(RecordingClient):
        async def fetch(self, *args: Any) -> Any:
            await self.clock.sleep(answer_seconds)  # the vendor's answer time, on the clock
            return await super().fetch(*args)

    try:
        caplog.set_level(logging.INFO, logger="exporter.poller")
        config = make_config(fake.url, names, interval=30.0, windows=["24h"])
        config = replace(config, api=replace(config.api, max_concurrency=1))
        client = SlowVendor(clients.for_api(config.api), clock)
        poller = Poller(config, client, SnapshotStore(), clock=clock)  # type: ignore[arg-type]
        poller.start()
        await clock.advance(2 * answer_seconds)
        assert poller.ready()
        await clock.advance(60.0)  # more rounds: the warning is not repeated
        await poller.stop()
    finally:
        await fake.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(";")[0] for r in warnings] == (
        ["polling every account takes longer than the polling interval"] if warned else []
    )
    if warned:
        assert (warnings[0].seconds, warnings[0].interval) == (40.0, 30.0)  # type: ignore[attr-defined]


class CountingVendor:
    """A vendor that answers every request after 10 s on the clock, counting those under way."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.in_flight = 0
        self.started: list[int] = []  # requests under way as each one started, itself included

    async def fetch(self, *args: Any) -> tuple[()]:
        self.in_flight += 1
        self.started.append(self.in_flight)
        try:
            await self.clock.sleep(10.0)
            return ()
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(("before", "after"), [(8, 2), (2, 8)])
async def test_a_reload_changing_max_concurrency_never_lets_more_requests_run(
    before: int, after: int
) -> None:
    """Requests started under the old limit and under the new one are counted together: after
    the reload, no request starts while the new bound is reached (lowered: the old requests
    end first; raised: the new bound at once, not old + new)."""
    names = [f"shop-{i}" for i in range(40)]
    config = make_config("http://127.0.0.1:9/", names, windows=["24h"])
    config = replace(config, api=replace(config.api, max_concurrency=before))
    clock = FakeClock()
    vendor = CountingVendor(clock)
    poller = Poller(config, vendor, SnapshotStore(), clock=clock)  # type: ignore[arg-type]

    def polls() -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("poll shop-"))

    poller.start()
    await clock.advance(0)
    assert vendor.in_flight == before and polls() == 2 * before
    first = len(vendor.started)
    poller.apply(replace(config, api=replace(config.api, max_concurrency=after)))
    counts = [polls()]
    for _ in range(50):
        await clock.advance(5.0)
        counts.append(polls())
    await poller.stop()
    later = vendor.started[first:]
    assert later and max(later) == after  # the new bound is reached, never passed
    # Polls admitted before a lowering drain away; none is admitted until under the new bound.
    settled = next(i for i, n in enumerate(counts) if n <= 2 * after)
    assert counts[:settled] == sorted(counts[:settled], reverse=True)
    assert max(counts[settled:]) == 2 * after
    assert poller.ready()  # every account polled


async def test_the_request_limit_lets_waiters_in_in_turn_and_survives_cancelling() -> None:
    limit = RequestLimit(1)
    order: list[str] = []
    release = asyncio.Event()

    async def request(name: str) -> None:
        async with limit:
            order.append(name)
            await release.wait()

    tasks = {n: asyncio.create_task(request(n)) for n in "abcd"}
    await asyncio.sleep(0)
    assert order == ["a"]
    tasks["b"].cancel()  # gave up while waiting: takes no slot
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*(t for n, t in tasks.items() if n != "b"))
    assert order == ["a", "c", "d"]
    async with limit:  # every slot given back
        pass
