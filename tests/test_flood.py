"""End to end: the exporter holds the line while one client floods its listener (issue #24).

The exporter runs as a process started with a soft open-files limit of 1024 and a hard one of
4096 (``prlimit``), in demo mode (its accounts polled every 2 s). One client, 127.0.0.1 (the
``tests/flood.py`` process), opens 5,000 connections and keeps each half-sent, trickling a
header line every 2 s. Meanwhile a second client, bound to 127.0.0.2, scrapes ``/metrics``
every second, each time on a new connection. Every scrape must be answered in under a second,
every healthy account keep being polled on its interval, the exporter's RSS grow by less than
50 MB, and every flood connection end: closed at once (a cap) or once the deadline passed.

These are real sockets and a real process, so the real clock is used, with wide margins; the
head deadline is cut to 6 s so the test is short. Every loop is bounded and stops by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tooling import free_port, missing, require_tool

pytestmark = pytest.mark.e2e

EXE = [sys.executable, "-m", "exporter"]
FLOOD = Path(__file__).with_name("flood.py")
INTERVAL = 2.0  # the demo's polling interval here
DEADLINE = 6.0  # --web.read-header-timeout
TRICKLE = 2.0  # a header line this often on every flood connection still open
FLOOD_SECONDS = 20.0  # how long the second client scrapes; the flood has ended by then
CONNECTIONS = 5000
HEALTHY = ("demo-fashion", "demo-electronics", "demo-garden")
WINDOWS = 3  # requests per poll of a demo account


@dataclass
class Scrape:
    at: float  # monotonic, when sent
    seconds: float  # until the whole body had arrived
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]


@dataclass
class Scraper:
    """Scrapes from 127.0.0.2 once a second, each time on a new connection."""

    url: str
    scrapes: list[Scrape] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def scrape(self, session: aiohttp.ClientSession) -> Scrape:
        sent = time.monotonic()
        async with session.get(self.url) as response:
            text = await response.text()
            if response.status != 200:
                raise AssertionError(f"status {response.status}")
        seconds = time.monotonic() - sent
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return Scrape(sent, seconds, samples)

    async def run(self, session: aiohttp.ClientSession, seconds: float) -> None:
        """Scrape once a second for ``seconds``."""
        end = time.monotonic() + seconds
        for _ in range(int(seconds) + 1):  # bounded, whatever the clock does
            started = time.monotonic()
            if started >= end:
                return
            try:
                self.scrapes.append(await self.scrape(session))
            except (aiohttp.ClientError, TimeoutError, AssertionError) as exc:
                self.failures.append(f"{time.monotonic() - started:.2f}s: {exc!r}")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


@pytest.fixture
async def scraper_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


@pytest.fixture
def exporter_log(tmp_path: Path) -> Path:
    return tmp_path / "exporter.log"


StartFn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_exporter(exporter_log: Path) -> Iterator[StartFn]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int, *flags: str) -> subprocess.Popen[bytes]:
        prlimit = require_tool("prlimit")
        with exporter_log.open("wb") as log:
            proc = subprocess.Popen(
                [
                    prlimit,
                    "--nofile=1024:4096",
                    *EXE,
                    "--demo",
                    f"--demo.interval={INTERVAL:g}s",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--web.read-header-timeout={DEADLINE:g}s",
                    "--log.level=debug",
                    *flags,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):  # up to ~30 s
        try:
            async with session.get(f"{base}/-/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the exporter never became ready")


def check_can_bind_127_0_0_2() -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            missing("cannot bind 127.0.0.2 (the second client's address)")


@pytest.mark.parametrize(
    ("flags", "accepted_at_least", "max_latency"),
    [
        # The case: the exporter's defaults, but for a short deadline.
        pytest.param((), 64, 1.0, id="default-limits"),
        # 2,000 connections held at once, more than the soft limit of 1024 the process started
        # with: only its raise to 4096 keeps the listener and the polls alive. Closing 2,000 at
        # the same moment costs the event loop a moment (docs/benchmarks.md has the figures), so
        # a scrape that coincides may take longer than a second, never three.
        pytest.param(("--web.max-connections-per-client=2000",), 2000, 3.0, id="2000-held"),
    ],
)
async def test_a_flood_of_half_sent_requests_does_not_stop_scrapes_or_polls(
    start_exporter: StartFn,
    scraper_session: aiohttp.ClientSession,
    exporter_log: Path,
    flags: tuple[str, ...],
    accepted_at_least: int,
    max_latency: float,
) -> None:
    check_can_bind_127_0_0_2()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_exporter(port, *flags)
    await wait_ready(scraper_session, base)
    scraper = Scraper(f"{base}/metrics")
    before = await scraper.scrape(scraper_session)

    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FLOOD),
        f"--port={port}",
        f"--connections={CONNECTIONS}",
        f"--trickle={TRICKLE:g}",
        f"--duration={FLOOD_SECONDS:g}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    flood_done = asyncio.ensure_future(flood.communicate())
    await asyncio.wait_for(scraper.run(scraper_session, FLOOD_SECONDS), FLOOD_SECONDS * 3)
    out, err = await asyncio.wait_for(flood_done, 30)
    assert flood.returncode == 0, err.decode()
    ended = json.loads(out)
    after = await scraper.scrape(scraper_session)
    log = exporter_log.read_text()

    # The soft limit was raised to the hard one at start.
    assert 'msg="open-files limit" soft_at_start=1024 soft=4096 hard=4096' in log

    # Every scrape from the second client was answered, each in under max_latency.
    latencies = [s.seconds for s in scraper.scrapes]
    assert not scraper.failures, scraper.failures
    assert len(latencies) >= FLOOD_SECONDS * 0.5, len(latencies)
    assert max(latencies) < max_latency, [
        (round(s.at - before.at, 1), round(s.seconds, 2)) for s in scraper.scrapes
    ]

    # Every healthy account was polled on its interval all along.
    elapsed = after.at - before.at
    polls = {
        account: (
            after.value("retargeting_api_requests_total", account=account)
            - before.value("retargeting_api_requests_total", account=account)
        )
        / WINDOWS
        for account in HEALTHY
    }
    for account, count in polls.items():
        assert count >= 0.7 * elapsed / INTERVAL - 1, (account, count, elapsed)
        gaps = _gaps([before, *scraper.scrapes, after], account)
        assert max(gaps) <= 3 * INTERVAL + 1, (account, gaps)

    # Memory: less than 50 MB more than before the flood, at any scrape.
    rss = [s.value("process_resident_memory_bytes") for s in [before, *scraper.scrapes, after]]
    growth = max(rss) - rss[0]
    assert growth < 50e6, growth

    # Every flood connection ended: closed at once by a cap, or when the deadline passed.
    assert not ended["open"] and not ended["answered"] and not ended["unconnected"], {
        k: len(v) for k, v in ended.items() if isinstance(v, list)
    }
    lifetimes = ended["closed"]
    assert len(lifetimes) == CONNECTIONS
    # Timed from when the flood saw each connection open, a little after the server did.
    at_once = [t for t in lifetimes if t < DEADLINE / 2]
    by_deadline = [t for t in lifetimes if t >= DEADLINE / 2]
    assert len(by_deadline) >= accepted_at_least
    assert max(by_deadline) < DEADLINE + 5  # trickling never kept one open much longer
    rejected, timeouts = (
        after.value(name, **labels) - before.value(name, **labels)
        for name, labels in (
            (
                "retargeting_exporter_http_connections_rejected_total",
                {"reason": "per_client_limit"},
            ),
            ("retargeting_exporter_http_header_timeouts_total", {}),
        )
    )
    assert rejected + timeouts == CONNECTIONS
    assert rejected == len(at_once) and timeouts == len(by_deadline)
    refusals = re.findall(r"msg=\"connection refused: too many open connections[^\n]*", log)
    assert len(refusals) == 1, refusals  # once per client (or for the total) per minute at most

    print(
        f"\n[{' '.join(flags) or 'defaults'}] scrapes={len(latencies)} "
        f"max_latency={max(latencies):.3f}s "
        f"polls={ {a: round(c, 1) for a, c in polls.items()} } over {elapsed:.1f}s "
        f"rss_growth={growth / 1e6:.1f}MB rejected_at_once={len(at_once)} "
        f"closed_by_deadline={len(by_deadline)} "
        f"deadline_close_after={min(by_deadline):.2f}-{max(by_deadline):.2f}s"
    )


def _gaps(scrapes: list[Scrape], account: str) -> list[float]:
    """Seconds between successive polls of ``account``, as its last-success time moved."""
    seen = [s.value("retargeting_last_success_timestamp_seconds", account=account) for s in scrapes]
    distinct = sorted(set(seen))
    return [b - a for a, b in itertools.pairwise(distinct)] or [float("inf")]
