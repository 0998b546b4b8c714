"""The daemon reads its files in a thread of their own: the event loop serves while they are read.

A ``ConfigSource`` whose checks (or loads) wait for the test's go-ahead, in whatever thread
calls them: while one waits, ``/metrics`` must be answered (it would not be, were the check on
the loop), the watcher's ticks and ``POST /-/reload`` must not start a second read, and stopping
must not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from fakeclock import FakeClock
from test_account_files import write
from test_account_files_watch import ENV, folder_with_shops

from exporter.accountfiles import ConfigSource
from exporter.config import Config
from exporter.daemon import SHUTTING_DOWN, Daemon
from exporter.fakeapi import FakeAccount, FakeApi

T = TypeVar("T")
WAIT = 30.0  # bounds every wait for the other thread, so a broken build fails instead of hanging


class GatedSource(ConfigSource):
    """Records each check and load; those named in ``gated`` wait for ``go`` first."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, env=ENV)
        self.gated: set[str] = set()
        self.go = threading.Event()
        self.entered = threading.Event()  # a gated call is waiting for go
        self.finished = threading.Event()  # a gated call has returned
        self.calls: list[str] = []
        self.on_the_loop: list[bool] = []  # per call: was an event loop running in its thread?
        self.most_at_once = 0
        self._running = 0
        self._lock = threading.Lock()

    def _call(self, what: str, work: Callable[[], T]) -> T:
        with self._lock:
            self.calls.append(what)
            self.on_the_loop.append(_loop_running())
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            if what in self.gated:
                self.entered.set()
                assert self.go.wait(WAIT)
            return work()
        finally:
            with self._lock:
                self._running -= 1
            if what in self.gated:
                self.finished.set()

    def changed(self) -> bool:
        return self._call("changed", super().changed)

    def load(self) -> Config:
        return self._call("load", super().load)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(key, seed=i) for i, key in enumerate(["key-steady", "key-x-1"])])
    await api.start()
    yield api
    await api.close()


class _Reloaded(logging.Handler):
    """Sets ``event`` when the daemon logs that it applied a configuration."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "configuration reloaded":
            self.event.set()


@pytest.fixture
def reloaded(caplog: pytest.LogCaptureFixture) -> Iterator[asyncio.Event]:
    handler = _Reloaded()
    logger = logging.getLogger("exporter")
    logger.addHandler(handler)
    with caplog.at_level(logging.INFO, logger="exporter"):
        yield handler.event
    logger.removeHandler(handler)


def watched_daemon(tmp_path: Path, fake: FakeApi) -> tuple[GatedSource, Daemon, FakeClock]:
    """The daemon watching shop-x's folder every 10 s of a fake clock, not started yet."""
    source = GatedSource(folder_with_shops(tmp_path, fake.url))
    config = source.load()
    source.calls.clear()
    source.on_the_loop.clear()
    clock = FakeClock()
    daemon = Daemon(
        config,
        load=source.load,
        source=source,
        listen_host="127.0.0.1",
        listen_port=0,
        auto_reload_interval=10,
        clock=clock,
    )
    return source, daemon, clock


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, fake: FakeApi, gated: str
) -> AsyncIterator[tuple[GatedSource, FakeClock, str]]:
    """The daemon started, its source's ``gated`` calls waiting for ``go``; stopped after."""
    source, daemon, clock = watched_daemon(tmp_path, fake)
    source.gated = {gated}
    try:
        [address] = await daemon.start()
        yield source, clock, address
    finally:
        source.go.set()
        await daemon.stop()


async def get(address: str, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}{path}") as response:
        assert response.status == 200
        return await response.text()


async def post_reload(address: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(f"http://{address}/-/reload") as response:
        return response.status, await response.text()


async def waited(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT)


def add_a_shop(tmp_path: Path) -> None:
    write(tmp_path / "accounts.d" / "new.yaml", [{"name": "shop-n", "rest_key": "key-new"}])


async def test_metrics_are_served_while_a_check_reads_the_files_and_its_result_then_applies(
    tmp_path: Path, fake: FakeApi, reloaded: asyncio.Event
) -> None:
    async with serving(tmp_path, fake, "changed") as (source, clock, address):
        add_a_shop(tmp_path)
        await clock.advance(10)  # the watcher's tick: its check waits in the other thread
        await waited(source.entered)

        during = await get(address, "/metrics")
        assert 'account="shop-x"' in during and 'account="shop-n"' not in during
        assert 'file="accounts.d/new.yaml"' not in during

        source.go.set()
        await asyncio.wait_for(reloaded.wait(), WAIT)
        after = await get(address, "/metrics")
        assert 'retargeting_account_info{account="shop-n"' in after  # the check's reload applied
        assert 'file="accounts.d/new.yaml"' in after
        assert source.calls == ["changed", "load"]
        assert source.on_the_loop == [False, False]  # both in a thread without an event loop


async def test_ticks_and_a_reload_during_a_check_do_not_start_a_second_read(
    tmp_path: Path, fake: FakeApi, reloaded: asyncio.Event
) -> None:
    async with serving(tmp_path, fake, "changed") as (source, clock, address):
        add_a_shop(tmp_path)
        await clock.advance(10)
        await waited(source.entered)
        await clock.advance(10)  # two more intervals pass while the check is still reading
        await clock.advance(10)
        asked = asyncio.create_task(post_reload(address))
        await get(address, "/metrics")  # a round trip: the reload request has come in meanwhile
        assert not asked.done()  # it waits for the check under way
        assert source.calls == ["changed"]

        source.go.set()
        # The check's own reload, then the one asked for: one after the other.
        assert await asyncio.wait_for(asked, WAIT) == (200, "configuration reloaded\n")
        assert source.calls == ["changed", "load", "load"]
        assert source.most_at_once == 1
        assert 'account="shop-n"' in await get(address, "/metrics")


async def test_a_tick_while_a_reload_reads_the_files_is_skipped(
    tmp_path: Path, fake: FakeApi
) -> None:
    async with serving(tmp_path, fake, "load") as (source, clock, address):
        add_a_shop(tmp_path)
        asked = asyncio.create_task(post_reload(address))
        await waited(source.entered)
        await clock.advance(10)  # the watcher's tick finds the reload under way
        assert source.calls == ["load"]
        during = await get(address, "/metrics")  # served while the reload reads
        assert 'account="shop-x"' in during and 'account="shop-n"' not in during
        source.go.set()
        assert await asyncio.wait_for(asked, WAIT) == (200, "configuration reloaded\n")
        assert source.calls == ["load"]
        assert source.on_the_loop == [False]


async def test_stop_does_not_wait_for_a_check_reading_the_files_and_drops_its_result(
    tmp_path: Path, fake: FakeApi
) -> None:
    source, daemon, clock = watched_daemon(tmp_path, fake)
    source.gated = {"changed"}
    try:
        await daemon.start()
        add_a_shop(tmp_path)
        await clock.advance(10)
        await waited(source.entered)
    finally:
        await asyncio.wait_for(daemon.stop(), WAIT)  # returns with the check still waiting
    assert not source.finished.is_set()
    source.go.set()
    await waited(source.finished)  # the check ends in its thread; it found the new file...
    assert source.calls == ["changed"]  # ...and nothing loaded it after the stop
    assert await daemon.reload() == (False, SHUTTING_DOWN)  # nor a reload asked too late
    assert source.calls == ["changed"]
