"""End to end: shops come and go through an account file while the exporter runs.

The exporter and the fake API (``python -m exporter.fakeapi``) are real processes. With
``--config.auto-reload-interval=200ms`` and no signal at all, an account file is added, changed
(currency, then key), broken and removed. Every wait is bounded and generous; nothing is timed.
Two accounts of the main file are polled on their own schedule throughout: LATE's second poll
is due ~44 s after its first (never within the test), SOON's ~15 s after (within it). So each
reload that re-polled them would show in their request counters.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_account_files import write
from test_reload import Daemon, Samples, samples, value
from tooling import free_port

from exporter.schedule import phase

EXE = [sys.executable, "-m", "exporter"]
SOON = next(f"soon-{i}" for i in range(10_000) if phase(f"soon-{i}") < 0.03)
LATE = next(f"late-{i}" for i in range(10_000) if phase(f"late-{i}") >= 0.95)
FILE = "accounts.d/shops.yaml"
WAIT = 30.0  # seconds: generous for a busy machine; a change is normally seen within 0.5 s


@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.fakeapi",
        "--port=0",
        "--accounts=4",  # keys key-00000 ... key-00003
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
    match = re.search(r"at (http://\S+)", line)
    assert match, f"the fake API did not say where it listens: {line!r}"
    yield match.group(1)
    proc.terminate()
    await proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def shops(currency: str, key_file: str = "shop-a.key") -> list[dict[str, Any]]:
    return [{"name": "shop-a", "rest_key_file": key_file, "currency": currency}]


async def test_a_file_added_changed_broken_and_removed_while_the_exporter_runs(
    tmp_path: Path, fake_url: str, http: aiohttp.ClientSession
) -> None:
    write(tmp_path / "keys" / "soon.key", "key-00000")
    write(tmp_path / "accounts.d" / "shop-a.key", "key-00002")
    write(tmp_path / "accounts.d" / "shop-a-new.key", "key-00003")
    write(
        tmp_path / "config.yaml",
        {
            "api": {"url": fake_url, "timeout": "5s", "retries": {"attempts": 1}},
            "polling": {"interval": "30s"},
            "windows": ["24h"],
            "account_files": ["accounts.d/*.yaml"],
            "accounts": [
                {"name": SOON, "rest_key_file": "keys/soon.key"},
                {"name": LATE, "rest_key": "key-00001"},
            ],
        },
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *EXE,
        f"--config.file={tmp_path / 'config.yaml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--config.auto-reload-interval=200ms",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    daemon = Daemon(proc, port)
    seen: list[Samples] = []

    async def metrics() -> Samples:
        async with http.get(daemon.url + "/metrics") as response:
            assert response.status == 200
            got = samples(await response.text())
        seen.append(got)
        return got

    async def until(what: str, check: Any) -> Samples:
        async def holds() -> bool:
            return bool(check(await metrics()))

        await daemon.wait_for(holds, what, timeout=WAIT)
        return seen[-1]

    def up(m: Samples, account: str) -> float | None:
        return value(m, "retargeting_up", account=account)

    def requests(m: Samples, account: str) -> float | None:
        return value(m, "retargeting_api_requests_total", account=account)

    def file_ok(m: Samples) -> float | None:
        return value(m, "retargeting_exporter_account_file_last_load_successful", file=FILE)

    try:
        await daemon.wait_for(lambda: daemon.logged("msg=listening"), "listening", timeout=WAIT)
        await until("both main accounts up", lambda m: up(m, SOON) == 1 and up(m, LATE) == 1)
        del seen[:-1]  # from here on, every scrape must show them up

        # Added: polled at once; its currency on account_info.
        write(tmp_path / FILE, shops("EUR"))
        m = await until("shop-a polled", lambda m: up(m, "shop-a") == 1)
        assert value(m, "retargeting_account_info", account="shop-a", currency="EUR") == 1
        assert file_ok(m) == 1 and requests(m, "shop-a") == 1

        # Changed (currency): applied without a poll.
        write(tmp_path / FILE, shops("HUF"))
        m = await until(
            "the new currency",
            lambda m: value(m, "retargeting_account_info", account="shop-a", currency="HUF"),
        )
        assert requests(m, "shop-a") == 1

        # Changed (the key): polled at once with it, not at its next slot ~15 s or more away.
        write(tmp_path / FILE, shops("HUF", key_file="shop-a-new.key"))
        m = await until("a poll with the new key", lambda m: requests(m, "shop-a") == 2)
        assert up(m, "shop-a") == 1

        # Broken: the file is marked, its account stays with what it had.
        write(tmp_path / FILE, "- name: shop-a\n  rest_key_file: [\n")
        m = await until("the broken file marked", lambda m: file_ok(m) == 0)
        assert up(m, "shop-a") == 1 and requests(m, "shop-a") == 2
        (line,) = [ln for ln in daemon.log if "account file problem" in ln]
        assert f"file={FILE}" in line and "line 3, column 1" in line

        # Removed: its account and its file's series go.
        (tmp_path / FILE).unlink()
        m = await until("shop-a gone", lambda m: up(m, "shop-a") is None)
        assert file_ok(m) is None

        # Throughout, the main file's accounts kept their own schedule: SOON's second poll
        # comes at its slot; LATE's is not due yet. No change above polled either again.
        m = await until("SOON's scheduled second poll", lambda m: requests(m, SOON) == 2)
        assert all(up(s, SOON) == 1 and up(s, LATE) == 1 for s in seen)
        assert all(requests(s, SOON) in (1, 2) for s in seen)
        assert all(requests(s, LATE) == 1 for s in seen)
        assert (await http.get(daemon.url + "/-/ready")).status == 200
        assert not daemon.logged("level=error"), daemon.text
    finally:
        await daemon.stop()
    assert proc.returncode == 0
