"""A bounded load test (issue 5): many concurrent scrapes while ~300 accounts are polled.

Over three intervals of a fake clock, 20 clients scrape ``/metrics`` (half of them gzip) while
300 accounts are polled from the local fake every 2 s of that clock. No scrape may fail, every
scrape must parse with Prometheus' own parser and carry every account, and no poll may start
later than planned. Bodies are parsed after the load phase, in other processes. Bigger numbers
and timings belong in the benchmarks; nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from conftest import Clients
from fakeclock import FakeClock, RecordingClient
from prometheus_client.parser import text_string_to_metric_families
from test_faults import client_for, key_of, make_config

from exporter.config import AccountConfig
from exporter.fakeapi import FakeAccount, FakeApi
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.store import AccountSnapshot, SnapshotStore
from exporter.web import Runtime, make_app

Client = TestClient  # type: ignore[type-arg]
ACCOUNTS = 300
UNKNOWN = 10  # of them with a key the vendor does not know: failing fast, all the time
INTERVAL = 2.0
JITTER = 0.25
CLIENTS = 20
STEP = 0.5  # the clock moves on by this much at a time
STEPS = int(3 * INTERVAL / STEP)
SCRAPE_EVERY = 6  # every client scrapes while the clock moves on every 6th step


class TimedPoller(Poller):
    """Records how late each scheduled poll starts compared with its planned time."""

    def __init__(self, *args: Any, clock: FakeClock, **kwargs: Any) -> None:
        super().__init__(*args, clock=clock, **kwargs)
        self.fake_clock = clock
        self.lateness: dict[str, list[float]] = defaultdict(list)
        self.polls: dict[str, int] = defaultdict(int)

    async def poll(self, account: AccountConfig) -> AccountSnapshot:
        planned = self.next_poll.get(account.name)  # None before the first poll
        if planned is not None:
            self.lateness[account.name].append(self.fake_clock.time() - planned)
        self.polls[account.name] += 1
        return await super().poll(account)


def accounts_in(body: bytes) -> tuple[int, set[str]]:
    """Parse an exposition with Prometheus' parser: the sample count and the accounts seen."""
    samples = 0
    accounts: set[str] = set()
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples += 1
            if sample.name == "retargeting_api_requests_total":
                accounts.add(sample.labels["account"])
    return samples, accounts


async def _no_reload() -> tuple[bool, str]:
    return True, "nothing to reload"


async def test_concurrent_scrapes_while_300_accounts_are_polled(
    aiohttp_client: Callable[[Any], Awaitable[Client]], clients: Clients
) -> None:
    names = [f"shop-{i:03d}" for i in range(ACCOUNTS)]
    served = names[UNKNOWN:]
    fake = FakeApi([FakeAccount(key_of(n), seed=i) for i, n in enumerate(served)])
    await fake.start()
    config = make_config(
        fake.url,
        names,
        interval=INTERVAL,
        stale_after=3 * INTERVAL,
        windows=["24h"],
        timeout=5.0,
        attempts=1,
        jitter=JITTER,
    )
    bodies: list[bytes] = []
    failures: list[str] = []
    store = SnapshotStore()
    clock = FakeClock()
    client = RecordingClient(client_for(clients, config), clock)
    poller = TimedPoller(config, client, store, clock=clock, rng=random.Random(7))
    runtime = Runtime(
        store=store,
        poller=poller,
        exposition=AccountsExposition(),
        self_metrics=poller.self_metrics,
        reload=_no_reload,
    )
    server = await aiohttp_client(make_app(runtime))
    url = server.make_url("/metrics")

    async def scrape(http: aiohttp.ClientSession, number: int) -> None:
        headers = {"Accept-Encoding": "gzip" if number % 2 else "identity"}
        try:
            async with http.get(url, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    failures.append(f"HTTP {response.status}")
                    return
                if response.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append(body)
        except (aiohttp.ClientError, OSError) as exc:
            failures.append(repr(exc))

    poller.start()
    try:
        await clock.advance(0)  # the first poll of every account
        assert poller.ready()
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            for step in range(STEPS):
                scrapes = (
                    [scrape(http, n) for n in range(CLIENTS)] if step % SCRAPE_EVERY == 1 else []
                )
                await asyncio.gather(clock.advance(STEP), *scrapes)
    finally:
        await poller.stop()
        await fake.close()

    assert failures == []
    assert len(bodies) == CLIENTS * STEPS // SCRAPE_EVERY
    # Every scrape parses, and carries every account.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        parsed = await asyncio.gather(*(loop.run_in_executor(pool, accounts_in, b) for b in bodies))
    for samples, accounts in parsed:
        assert accounts == set(names)
        assert samples > ACCOUNTS * 30
    # The schedule held: every account was polled again, none later than planned.
    assert all(poller.polls[name] >= 3 for name in names)
    late = {name: max(values) for name, values in poller.lateness.items() if max(values) > 1e-6}
    assert late == {}
    assert (
        poller.self_metrics.registry.get_sample_value("retargeting_exporter_internal_errors_total")
        == 0
    )
