"""Watching account files while polling: on the injected clock, with the real local fake API.

The watcher checks every 10 s of the fake clock; each change (a file added, a key file
rewritten, a file broken, a file removed) is applied at the next check, and only the account it
concerns is polled: the others keep their schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import Clients
from fakeclock import FakeClock, RecordingClient
from prometheus_client.parser import text_string_to_metric_families
from test_account_files import main_file, write

from exporter.accountfiles import ConfigSource
from exporter.daemon import Daemon
from exporter.fakeapi import FakeAccount, FakeApi, Fault
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.schedule import phase
from exporter.store import SnapshotStore
from exporter.watch import ConfigWatcher
from exporter.web import Runtime, make_app

INTERVAL = 30.0
# Its second poll comes (0.5 + phase) intervals after the first: within the test's 40 s.
STEADY = next(f"steady-{i}" for i in range(10_000) if 0.1 <= phase(f"steady-{i}") < 0.3)
ENV = {"KEY_STEADY": "key-steady"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    keys = ["key-steady", "key-x-1", "key-x-2", "key-new", "key-hang"]
    api = FakeApi([FakeAccount(key, seed=i) for i, key in enumerate(keys)])
    await api.start()
    yield api
    await api.close()


def folder_with_shops(tmp_path: Path, url: str) -> Path:
    main_file(
        tmp_path,
        [{"name": STEADY, "rest_key_env": "KEY_STEADY"}],
        api={"url": url, "timeout": "5s", "retries": {"attempts": 1}},
        polling={"interval": f"{int(INTERVAL)}s"},
    )
    write(tmp_path / "accounts.d" / "keys" / "x.key", "key-x-1")
    write(
        tmp_path / "accounts.d" / "shops.yaml",
        [{"name": "shop-x", "rest_key_file": "keys/x.key", "currency": "EUR"}],
    )
    return tmp_path / "config.yaml"


@contextlib.asynccontextmanager
async def watched_poller(
    tmp_path: Path, fake: FakeApi, clients: Clients, hanging: tuple[str, ...] = ()
) -> AsyncIterator[tuple[ConfigSource, FakeClock, RecordingClient, SnapshotStore]]:
    """shop-x's folder polled on a fake clock and checked every 10 s of it; stopped after."""
    source = ConfigSource(folder_with_shops(tmp_path, fake.url), env=ENV)
    config = source.load()
    clock = FakeClock()
    sent = RecordingClient(clients.for_api(config.api), clock, hanging=hanging)
    store = SnapshotStore()
    poller = Poller(config, sent, store, clock=clock)  # type: ignore[arg-type]

    async def check() -> None:  # on the loop here: the daemon's thread is tested on its own
        if source.changed():
            poller.apply(source.load())

    watcher = asyncio.create_task(ConfigWatcher(10, check, clock).run())
    poller.start()
    try:
        yield source, clock, sent, store
    finally:
        watcher.cancel()
        await poller.stop()


async def test_changes_are_applied_at_the_next_check_and_touch_only_their_account(
    tmp_path: Path, fake: FakeApi, clients: Clients
) -> None:
    async with watched_poller(tmp_path, fake, clients) as (source, clock, sent, store):
        t0 = clock.monotonic()
        await clock.advance(0)
        assert sent.times("key-steady") == [t0] and sent.times("key-x-1") == [t0]
        steady = store.get(STEADY)
        assert steady is not None and steady.up and steady.figures

        write(tmp_path / "accounts.d" / "new.yaml", [{"name": "shop-n", "rest_key": "key-new"}])
        await clock.advance(10)
        assert sent.times("key-new") == [t0 + 10]  # added: polled at once
        added = store.get("shop-n")
        assert added is not None and added.up
        assert store.get(STEADY) == steady  # a reload left its figures and state as they were

        write(tmp_path / "accounts.d" / "keys" / "x.key", "key-x-2")
        await clock.advance(10)
        assert sent.times("key-x-2") == [t0 + 20]  # its key changed: polled at once
        assert all(at < t0 + 20 for at in sent.times("key-x-1"))  # the old key: never again

        write(tmp_path / "accounts.d" / "shops.yaml", "- name: shop-x\n  rest_key_file: [\n")
        await clock.advance(10)
        assert sent.times("key-x-2") == [t0 + 20]  # a broken file polls nobody again
        assert store.get("shop-x") is not None  # an unreadable file keeps its accounts
        assert not source.files[1].ok and source.files[1].file == "accounts.d/shops.yaml"

        (tmp_path / "accounts.d" / "new.yaml").unlink()
        await clock.advance(10)
        assert store.get("shop-n") is None
        assert store.names() == [STEADY, "shop-x"]

        # Through all of it, the account nobody touched was polled on its own schedule only.
        assert sent.times("key-steady") == [t0, t0 + INTERVAL * (0.5 + phase(STEADY))]


async def test_a_key_change_polls_at_once_even_while_a_poll_with_the_old_key_hangs(
    tmp_path: Path, fake: FakeApi, clients: Clients
) -> None:
    fake.set_fault(Fault.HANG, key="key-x-1")  # shop-x's first poll never gets an answer
    hanging = ("key-x-1",)
    async with watched_poller(tmp_path, fake, clients, hanging) as (_, clock, sent, store):
        t0 = clock.monotonic()
        await clock.advance(0)
        assert sent.times("key-x-1") == [t0]
        write(tmp_path / "accounts.d" / "keys" / "x.key", "key-x-2")
        await clock.advance(10)
        assert sent.times("key-x-2") == [t0 + 10]  # not after the hanging poll, not at a slot
        snapshot = store.get("shop-x")
        assert snapshot is not None and snapshot.up and snapshot.requests_total == 1


async def test_an_added_account_is_pending_on_the_status_page_and_ready_stays_200(
    tmp_path: Path,
    fake: FakeApi,
    clients: Clients,
    aiohttp_client: Callable[[Any], Awaitable[TestClient[Any, Any]]],
) -> None:
    fake.set_fault(Fault.HANG, key="key-hang")  # its first poll never ends during the test
    source = ConfigSource(folder_with_shops(tmp_path, fake.url), env=ENV)
    config = source.load()
    store = SnapshotStore()
    poller = Poller(config, clients.for_api(config.api), store)

    async def reload() -> tuple[bool, str]:
        poller.apply(source.load())
        return True, "configuration reloaded"

    runtime = Runtime(
        store=store,
        poller=poller,
        exposition=AccountsExposition(),
        self_metrics=poller.self_metrics,
        reload=reload,
    )
    client = await aiohttp_client(make_app(runtime))
    poller.start()
    try:
        await fake.wait_until(lambda: fake.count("key-steady") and fake.count("key-x-1"))
        for _ in range(3000):  # both answers stored, a few loop rounds after the fake answered
            if poller.ready():
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/-/ready")).status == 200, "the two first polls were not stored"

        write(tmp_path / "accounts.d" / "new.yaml", [{"name": "shop-h", "rest_key": "key-hang"}])
        assert (await client.post("/-/reload")).status == 200
        await fake.wait_until(lambda: fake.count("key-hang") == 1)  # polled at once
        page = await (await client.get("/")).text()
        row = next(line for line in page.splitlines() if 'data-account="shop-h"' in line)
        assert '<span class="badge pending">pending</span>' in row
        x_row = next(line for line in page.splitlines() if 'data-account="shop-x"' in line)
        assert '<td class="currency">EUR</td>' in x_row
        assert (await client.get("/-/ready")).status == 200  # still in its Service
    finally:
        await poller.stop()


async def test_the_daemon_exports_each_account_files_state(tmp_path: Path, fake: FakeApi) -> None:
    source = ConfigSource(folder_with_shops(tmp_path, fake.url), env=ENV)
    daemon = Daemon(
        source.load(), load=source.load, source=source, listen_host="127.0.0.1", listen_port=0
    )
    family = "retargeting_exporter_account_file_last_load_successful"
    try:
        [address] = await daemon.start()
        assert await file_states(address, family) == {"accounts.d/shops.yaml": 1}
        write(tmp_path / "accounts.d" / "shops.yaml", "{not: [a list")
        write(tmp_path / "accounts.d" / "more.yaml", [])
        assert await daemon.reload() == (True, "configuration reloaded")  # the main file is good
        assert await file_states(address, family) == {
            "accounts.d/more.yaml": 1,
            "accounts.d/shops.yaml": 0,
        }
        # The status page lists the files too, with each problem.
        async with aiohttp.ClientSession() as http, http.get(f"http://{address}/") as response:
            page = await response.text()
        rows = {
            line.split('data-file="')[1].split('"')[0]: line
            for line in page.splitlines()
            if 'class="file ' in line
        }
        assert '<span class="badge up">valid</span>' in rows["accounts.d/more.yaml"]
        broken = rows["accounts.d/shops.yaml"]
        assert '<span class="badge down">1 problem(s)</span>' in broken
        assert "<td>1</td>" in broken  # shop-x kept, as last loaded
        assert "accounts.d/shops.yaml: line 1, column 14: expected &#x27;,&#x27; or" in broken
    finally:
        await daemon.stop()


async def file_states(address: str, family: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as response:
        text = await response.text()
    return {
        sample.labels["file"]: sample.value
        for metric in text_string_to_metric_families(text)
        for sample in metric.samples
        if sample.name == family
    }
