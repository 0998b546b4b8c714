"""The daemon's life in this process: start, reload, stop, each called on its own.

The command-line tests (test_cli, test_reload, test_shutdown) drive the same object through
signals and HTTP in a subprocess; here each step is called directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, parse_config
from exporter.daemon import DEMO_RELOAD, Daemon
from exporter.fakeapi import FakeAccount, FakeApi, Fault
from exporter.yamlcheck import ConfigError

ENV = {"KEY_A": "daemon-key-a", "KEY_B": "daemon-key-b"}


def make_config(url: str, *names: str, interval: str = "5m") -> Config:
    data: dict[str, Any] = {
        "api": {"url": url},
        "polling": {"interval": interval},
        "accounts": [{"name": name, "rest_key_env": f"KEY_{name[-1].upper()}"} for name in names],
    }
    return parse_config(data, env=ENV)


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(key, seed=i) for i, key in enumerate(ENV.values())])
    await api.start()
    try:
        yield api
    finally:
        await api.close()


async def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def intervals(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    """Each account's polling interval: the accounts the daemon polls, from the first scrape."""
    return {
        dict(labels)["account"]: value
        for (name, labels), value in metrics.items()
        if name == "retargeting_poll_interval_seconds"
    }


async def test_start_serves_reload_applies_or_keeps_and_stop_closes(fake: FakeApi) -> None:
    next_config: list[Config | ConfigError] = []

    def load() -> Config:
        item = next_config.pop()
        if isinstance(item, ConfigError):
            raise item
        return item

    daemon = Daemon(
        make_config(fake.url, "shop-a"), load=load, listen_host="127.0.0.1", listen_port=0
    )
    try:
        [address] = await daemon.start()
        base = f"http://{address}"
        assert intervals(await scrape(base)) == {"shop-a": 300}

        next_config.append(make_config(fake.url, "shop-a", "shop-b", interval="1m"))
        assert await daemon.reload() == (True, "configuration reloaded")
        metrics = await scrape(base)
        assert intervals(metrics) == {"shop-a": 60, "shop-b": 60}
        assert metrics[("retargeting_exporter_accounts", frozenset())] == 2
        assert metrics[("retargeting_exporter_config_last_reload_successful", frozenset())] == 1

        next_config.append(ConfigError("config.yaml", ["accounts[0].name: required"]))
        async with aiohttp.ClientSession() as http, http.post(f"{base}/-/reload") as response:
            assert response.status == 500
            assert "accounts[0].name: required" in await response.text()
        metrics = await scrape(base)
        assert intervals(metrics) == {"shop-a": 60, "shop-b": 60}  # the running config stays
        assert metrics[("retargeting_exporter_config_last_reload_successful", frozenset())] == 0
    finally:
        await daemon.stop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{base}/-/healthy")


async def test_without_a_file_to_reread_a_reload_says_so(fake: FakeApi) -> None:
    daemon = Daemon(make_config(fake.url, "shop-a"), load=None, listen_host=None, listen_port=0)
    assert await daemon.reload() == (True, DEMO_RELOAD)
    await daemon.stop()  # never started: nothing to undo, no error


async def test_an_address_in_use_is_an_error_and_stop_still_cleans_up(fake: FakeApi) -> None:
    first = Daemon(
        make_config(fake.url, "shop-a"), load=None, listen_host="127.0.0.1", listen_port=0
    )
    try:
        [address] = await first.start()
        port = int(address.rsplit(":", 1)[1])
        second = Daemon(
            make_config(fake.url, "shop-a"), load=None, listen_host="127.0.0.1", listen_port=port
        )
        with pytest.raises(OSError):
            await second.start()
        await second.stop()
    finally:
        await first.stop()


async def test_a_reload_that_replaces_the_client_does_not_wait_for_its_requests(
    fake: FakeApi,
) -> None:
    """The retired client closes in the background, once its last requests are done: the
    reload answers at once, even while a request on the old client hangs."""
    moved = FakeApi([FakeAccount(key, seed=i) for i, key in enumerate(ENV.values())])
    await moved.start()
    fake.set_fault(Fault.HANG)  # every request to the old URL hangs
    slow = make_config(fake.url, "shop-a")
    slow = replace(slow, api=replace(slow.api, timeout=600.0))
    daemon = Daemon(
        slow, load=lambda: make_config(moved.url, "shop-a"), listen_host="127.0.0.1", listen_port=0
    )
    try:
        await daemon.start()
        await asyncio.wait_for(fake.wait_until(lambda: fake.in_flight > 0), 30)
        # A reload that waited for the hanging request would not answer within 600 s.
        assert await asyncio.wait_for(daemon.reload(), 30) == (True, "configuration reloaded")
        assert fake.in_flight > 0  # the old client's request is still out, not cut off
    finally:
        await asyncio.wait_for(daemon.stop(), 30)  # cancels it, and the old client closes
        await moved.close()
    assert fake.in_flight == 0
