"""Reload without restart: SIGHUP and POST /-/reload against the running daemon.

The daemon runs as a subprocess polling the fake API in this test's event loop, so every request
it sends (and the key it carried) is visible here. The real 30 s minimum interval stays: account
names are chosen by their scheduling phase, so "the next poll" is known to come ~15 s after the
first one, and "no poll before the end of the test" holds for the account that must keep its
schedule.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tooling import free_port

from exporter.config import parse_config
from exporter.fakeapi import FakeAccount, FakeApi
from exporter.poller import Poller
from exporter.schedule import phase
from exporter.store import SnapshotStore

EXE = [sys.executable, "-m", "exporter"]
INTERVAL = 30.0  # the configuration's minimum: the real thing, not a test-only shortcut

KEY_A_OLD, KEY_A_NEW = "reload-a-old-3f9c", "reload-a-new-77d1"
KEY_B, KEY_C, KEY_D = "reload-b-0e41", "reload-c-a8b2", "reload-d-5d07"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def named(prefix: str, low: float, high: float) -> str:
    """An account name whose poll phase is in [low, high): its second poll comes at
    (0.5 + phase) x interval after the first."""
    return next(f"{prefix}-{i}" for i in range(10_000) if low <= phase(f"{prefix}-{i}") < high)


SOON = named("shop-soon", 0.0, 0.03)  # second poll ~15 s after the first
LATE = named("shop-late", 0.95, 1.0)  # second poll ~44 s after the first: never in a test
GONE = named("shop-gone", 0.0, 1.0)
NEW = named("shop-new", 0.0, 1.0)


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: Samples, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def metadata(text: str) -> list[str]:
    """The HELP and TYPE lines of an exposition."""
    return [line for line in text.splitlines() if line.startswith(("# HELP", "# TYPE"))]


def accounts_in(metrics: Samples) -> set[str]:
    return {dict(labels)["account"] for _, labels in metrics if "account" in dict(labels)}


class Daemon:
    """The exporter as a subprocess; its log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode())

    def logged(self, text: str) -> list[str]:
        return [line for line in self.log if text in line]

    async def wait_for(self, condition: Any, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if self.proc.returncode is not None:
                raise AssertionError(f"the exporter exited while waiting for {what}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log:\n{self.text}")
            await asyncio.sleep(0.05)

    @property
    def text(self) -> str:
        return "".join(self.log)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    # The new key of the rotated account belongs to the same vendor account (same figures).
    api = FakeApi(
        [
            FakeAccount(KEY_A_OLD, seed=1),
            FakeAccount(KEY_A_NEW, seed=1),
            FakeAccount(KEY_B, seed=2),
            FakeAccount(KEY_C, seed=3),
            FakeAccount(KEY_D, seed=4),
        ]
    )
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def write_config(path: Path, url: str, accounts: list[dict[str, Any]], **extra: Any) -> None:
    data = {
        "api": {"url": url, "timeout": "3s", "retries": {"attempts": 1}},
        "polling": {"interval": f"{int(INTERVAL)}s", "jitter": "0s"},
        "windows": ["24h"],
        "accounts": accounts,
        **extra,
    }
    # Replace, never rewrite in place: a reload must never see a half-written file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def write_key(path: Path, key: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(key + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


async def start(config: Path, env: dict[str, str]) -> Daemon:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *EXE,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    daemon = Daemon(proc, port)
    await daemon.wait_for(lambda: daemon.logged("msg=listening"), "the exporter to listen")
    return daemon


async def scrape(http: aiohttp.ClientSession, daemon: Daemon) -> Samples:
    async with http.get(daemon.url + "/metrics") as response:
        assert response.status == 200
        return samples(await response.text())


async def ready(http: aiohttp.ClientSession, daemon: Daemon) -> bool:
    async with http.get(daemon.url + "/-/ready") as response:
        return response.status == 200


async def test_sighup_applies_a_new_config_and_key_file_atomically(
    fake: FakeApi, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    key_a = tmp_path / "a.key"
    write_key(key_a, KEY_A_OLD)
    write_key(tmp_path / "d.key", KEY_D)
    config = tmp_path / "config.yaml"
    soon = {"name": SOON, "rest_key_file": str(key_a), "labels": {"team": "emea"}}
    late = {"name": LATE, "rest_key_env": "RELOAD_KEY_B"}
    gone = {"name": GONE, "rest_key_env": "RELOAD_KEY_C"}
    write_config(config, fake.url, [soon, late, gone])
    env = dict(os.environ) | {"RELOAD_KEY_B": KEY_B, "RELOAD_KEY_C": KEY_C}
    daemon = await start(config, env)
    try:
        await daemon.wait_for(lambda: ready(http, daemon), "every account polled once")
        before = await scrape(http, daemon)
        assert accounts_in(before) == {SOON, LATE, GONE}
        assert value(before, "retargeting_exporter_config_last_reload_successful") == 1
        loaded_at = value(
            before, "retargeting_exporter_config_last_reload_success_timestamp_seconds"
        )
        assert loaded_at is not None and abs(loaded_at - time.time()) < 30
        late_success = value(before, "retargeting_last_success_timestamp_seconds", account=LATE)
        assert late_success is not None, daemon.text
        late_revenue = {k: v for k, v in before.items() if ("account", LATE) in k[1]}

        # The key file of SOON changes (its config entry does not), GONE goes, NEW comes.
        write_key(key_a, KEY_A_NEW)
        new = {"name": NEW, "rest_key_file": str(tmp_path / "d.key")}
        write_config(config, fake.url, [soon, late, new])
        reloaded_at = time.time()
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(lambda: daemon.logged('msg="configuration reloaded"'), "reload")
        (line,) = daemon.logged('msg="configuration reloaded"')
        assert f"added={NEW}" in line and f"removed={GONE}" in line and f"changed={SOON}" in line

        # Added: polled at once. Removed: every series gone at once.
        await daemon.wait_for(lambda: fake.count(KEY_D) >= 1, "the added account's first poll")

        async def new_account_up() -> bool:
            return value(await scrape(http, daemon), "retargeting_up", account=NEW) == 1

        await daemon.wait_for(new_account_up, "the added account's series")
        after = await scrape(http, daemon)
        assert accounts_in(after) == {SOON, LATE, NEW}
        assert value(after, "retargeting_exporter_config_last_reload_successful") == 1
        stamp = value(after, "retargeting_exporter_config_last_reload_success_timestamp_seconds")
        assert stamp is not None and reloaded_at - 1 <= stamp <= time.time() + 1

        # Unchanged: same data, no extra poll because of the reload.
        assert fake.count(KEY_B) == 1
        assert {k: v for k, v in after.items() if ("account", LATE) in k[1]} == late_revenue
        assert value(after, "retargeting_last_success_timestamp_seconds", account=LATE) == (
            late_success
        )

        # Changed key: the next request of that account carries the new key, never the old.
        await daemon.wait_for(
            lambda: fake.count(KEY_A_NEW) >= 1, "the rotated key's first request", timeout=40
        )
        assert fake.count(KEY_A_OLD) == 1  # only the poll before the reload
        assert value(await scrape(http, daemon), "retargeting_up", account=SOON) == 1
        assert fake.count(KEY_B) == 1  # LATE's schedule was never disturbed
        assert fake.count(KEY_C) == 1  # the removed account was never polled again
        for key in (KEY_A_OLD, KEY_A_NEW, KEY_B, KEY_C, KEY_D):
            assert key not in daemon.text
    finally:
        await daemon.stop()
    assert daemon.proc.returncode == 0


async def test_a_reload_to_another_api_url_polls_there(
    fake: FakeApi, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A changed api.url gets a new client; the old one is retired without an error."""
    moved = FakeApi([FakeAccount(KEY_B, seed=2), FakeAccount(KEY_D, seed=4)])
    await moved.start()
    config = tmp_path / "config.yaml"
    late = {"name": LATE, "rest_key_env": "RELOAD_KEY_B"}
    write_config(config, fake.url, [late])
    env = dict(os.environ) | {"RELOAD_KEY_B": KEY_B, "RELOAD_KEY_D": KEY_D}
    daemon = await start(config, env)
    try:
        await daemon.wait_for(lambda: ready(http, daemon), "every account polled once")
        new = {"name": NEW, "rest_key_env": "RELOAD_KEY_D"}
        write_config(config, moved.url, [late, new], api={"url": moved.url, "user_agent": "m/2"})
        daemon.proc.send_signal(signal.SIGHUP)
        # The added account is polled at once, through the new client, at the new URL.
        await daemon.wait_for(lambda: moved.count(KEY_D) >= 1, "the first poll at the new URL")

        async def new_account_up() -> bool:
            return value(await scrape(http, daemon), "retargeting_up", account=NEW) == 1

        await daemon.wait_for(new_account_up, "the added account's series")
        assert fake.count(KEY_D) == 0 and fake.count(KEY_B) == 1
        assert value(await scrape(http, daemon), "retargeting_up", account=LATE) == 1
        assert "level=error" not in daemon.text and "Traceback" not in daemon.text
    finally:
        await daemon.stop()
        await moved.close()
    assert daemon.proc.returncode == 0


async def test_invalid_config_is_rejected_and_the_old_one_keeps_running(
    fake: FakeApi, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    accounts = [
        {"name": LATE, "rest_key_env": "RELOAD_KEY_B"},
        {"name": GONE, "rest_key_env": "RELOAD_KEY_C"},
    ]
    write_config(config, fake.url, accounts)
    env = dict(os.environ) | {"RELOAD_KEY_B": KEY_B, "RELOAD_KEY_C": KEY_C}
    daemon = await start(config, env)
    try:
        await daemon.wait_for(lambda: ready(http, daemon), "every account polled once")
        async with http.get(daemon.url + "/metrics") as response:
            first_text = await response.text()
        before = samples(first_text)
        loaded_at = value(
            before, "retargeting_exporter_config_last_reload_success_timestamp_seconds"
        )

        # Two problems at once; one of them a key file that cannot be read.
        broken = [
            {"name": LATE, "rest_key_env": "RELOAD_KEY_B", "interval": "5s"},
            {"name": NEW, "rest_key_file": str(tmp_path / "missing.key")},
        ]
        write_config(config, fake.url, broken)
        async with http.post(daemon.url + "/-/reload") as response:
            assert response.status == 500
            body = await response.text()
        assert "accounts[0].interval: must be at least 30s" in body
        assert f"accounts[1].rest_key_file: cannot read {tmp_path / 'missing.key'}" in body
        await daemon.wait_for(lambda: daemon.logged("reload failed"), "the logged rejection")
        (line,) = daemon.logged("reload failed, keeping the running configuration")
        assert "accounts[0].interval" in line

        # The old configuration keeps running, and the failure is exported.
        after = await scrape(http, daemon)
        assert accounts_in(after) == {LATE, GONE}
        assert value(after, "retargeting_exporter_config_last_reload_successful") == 0
        stamp = value(after, "retargeting_exporter_config_last_reload_success_timestamp_seconds")
        assert stamp == loaded_at
        async with http.get(daemon.url + "/-/healthy") as response:
            assert response.status == 200

        # SIGHUP takes the same path; a file that is not YAML is rejected the same way.
        config.write_text("accounts: [unclosed\n")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for(
            lambda: len(daemon.logged("reload failed")) == 2, "the second rejection"
        )
        assert "line 2, column 1" in daemon.logged("reload failed")[1]

        # Reload is POST only: a GET changes nothing.
        write_config(config, fake.url, accounts[:1])
        async with http.get(daemon.url + "/-/reload") as response:
            assert response.status == 405
        assert accounts_in(await scrape(http, daemon)) == {LATE, GONE}

        # A valid file again: applied, the success exported with a new timestamp, the new
        # interval exported as a value; HELP and TYPE lines stay as they were.
        write_config(config, fake.url, accounts[:1], polling={"interval": "45s"})
        async with http.post(daemon.url + "/-/reload") as response:
            assert response.status == 200
            assert await response.text() == "configuration reloaded\n"
        async with http.get(daemon.url + "/metrics") as response:
            text = await response.text()
        after = samples(text)
        assert value(after, "retargeting_poll_interval_seconds", account=LATE) == 45
        assert metadata(text) == metadata(first_text)
        assert accounts_in(after) == {LATE}
        assert value(after, "retargeting_exporter_config_last_reload_successful") == 1
        stamp = value(after, "retargeting_exporter_config_last_reload_success_timestamp_seconds")
        assert stamp is not None and loaded_at is not None and stamp > loaded_at
    finally:
        await daemon.stop()
    assert daemon.proc.returncode == 0


# -- Poller.apply in-process: the races a subprocess cannot time ---------------------------------


def config_for(url: str, labels: dict[str, str], key: str = KEY_B) -> Any:
    data = {
        "api": {"url": url, "timeout": "3s", "retries": {"attempts": 1}},
        "windows": ["24h"],
        "accounts": [{"name": LATE, "rest_key": key, "labels": labels}],
    }
    return parse_config(data)


async def test_a_reload_during_a_poll_is_not_undone_by_that_poll(fake: FakeApi) -> None:
    """The poll that was in flight when the labels changed must not store the old labels."""
    from exporter.client import TrafficSourceClient

    fake.latency = 0.5
    old = config_for(fake.url, {"team": "emea"})
    new = config_for(fake.url, {"team": "apac"}, key=KEY_D)
    store = SnapshotStore()
    async with TrafficSourceClient(fake.url, timeout=3, user_agent="test") as client:
        poller = Poller(old, client, store)
        in_flight = asyncio.create_task(poller.poll(old.accounts[0]))
        await fake_request_arrived(fake, KEY_B)
        changes = poller.apply(new)
        assert changes["changed"] == [LATE]
        changed = store.get(LATE)
        assert changed is not None and changed.labels == {"team": "apac"}
        await in_flight
        snapshot = store.get(LATE)
        assert snapshot is not None and snapshot.polled and snapshot.up
        assert snapshot.labels == {"team": "apac"}
        # The next poll uses the new key.
        await poller.poll(poller.config.accounts[0])
        assert [r.rest_key for r in fake.requests] == [KEY_B, KEY_D]


async def fake_request_arrived(fake: FakeApi, key: str) -> None:
    deadline = time.monotonic() + 5
    while fake.count(key) == 0:
        assert time.monotonic() < deadline, "the poll never reached the fake"
        await asyncio.sleep(0.01)
