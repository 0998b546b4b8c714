"""The HTTP endpoints, through aiohttp's test client."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter.client import TrafficSourceClient
from exporter.config import parse_config
from exporter.fakeapi import AccountState, FakeAccount, FakeApi
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.store import SnapshotStore
from exporter.web import GzipCache, Runtime, make_app

KEYS = {"K_GOOD": "web-good-key-91", "K_BAD": "web-bad-key-37", "K_ODD": "web-odd-key-55"}
Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi(
        [
            FakeAccount(KEYS["K_GOOD"], seed=1),
            FakeAccount(KEYS["K_BAD"], AccountState.CLOSED),
            FakeAccount(KEYS["K_ODD"], seed=2),
        ]
    )
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def runtime(fake: FakeApi) -> AsyncIterator[Runtime]:
    config = parse_config(
        {
            "api": {"url": fake.url},
            "accounts": [
                {"name": "good", "rest_key_env": "K_GOOD", "labels": {"team": "a"}},
                {"name": "closed", "rest_key_env": "K_BAD"},
                {"name": "<script>alert(1)</script>", "rest_key_env": "K_ODD"},
            ],
        },
        env=KEYS,
    )
    store = SnapshotStore()
    reloads: list[str] = []

    async def reload() -> tuple[bool, str]:
        reloads.append("called")
        return True, "configuration reloaded"

    async with TrafficSourceClient(fake.url, timeout=2, user_agent="t") as client:
        poller = Poller(config, client, store)
        rt = Runtime(
            store=store,
            poller=poller,
            exposition=AccountsExposition(),
            self_metrics=poller.self_metrics,
            reload=reload,
        )
        rt.reloads = reloads  # type: ignore[attr-defined]
        yield rt
        await poller.stop()


@pytest.fixture
async def client(runtime: Runtime, aiohttp_client: Callable[[Any], Awaitable[Client]]) -> Client:
    return await aiohttp_client(make_app(runtime))


async def test_ready_only_after_every_account_was_polled(client: Client, runtime: Runtime) -> None:
    assert (await client.get("/-/ready")).status == 503
    await runtime.poller.poll(runtime.poller.config.accounts[0])
    assert (await client.get("/-/ready")).status == 503
    await runtime.poller.poll_all_once()
    response = await client.get("/-/ready")
    assert response.status == 200 and await response.text() == "Ready.\n"


async def test_healthy_while_poll_loops_run(client: Client, runtime: Runtime) -> None:
    assert (await client.get("/-/healthy")).status == 503  # loops not started
    runtime.poller.start()
    assert (await client.get("/-/healthy")).status == 200
    await runtime.poller.stop()
    assert (await client.get("/-/healthy")).status == 503


async def test_metrics_plain_and_gzip(client: Client, runtime: Runtime) -> None:
    await runtime.poller.poll_all_once()
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in plain.headers
    text = await plain.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["account"]: s.value for s in families["retargeting_up"].samples}
    assert up == {"good": 1, "closed": 0, "<script>alert(1)</script>": 1}
    active = {s.labels["account"]: s.value for s in families["retargeting_account_active"].samples}
    assert active["closed"] == 0
    info = [
        s for s in families["retargeting_account_info"].samples if s.labels["account"] == "good"
    ]
    assert info[0].labels["team"] == "a"
    assert families["retargeting_exporter_accounts"].samples[0].value == 3

    zipped = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    unzipped = gzip.decompress(await zipped.read()).decode()
    strip = lambda t: [ln for ln in t.splitlines() if not ln.startswith("process_")]  # noqa: E731
    assert strip(unzipped) == strip(text)
    for value in KEYS.values():
        assert value not in text


async def test_gzip_cache_output_is_one_valid_member() -> None:
    cache = GzipCache()
    body = b"x" * 300_000 + b"\n"  # large enough to be compressed in a thread
    first = await cache.compress(1, [body], b"tail-1\n")
    second = await cache.compress(1, iter(()), b"tail-2\n")  # same version: chunks not read
    assert gzip.decompress(first) == body + b"tail-1\n"
    assert gzip.decompress(second) == body + b"tail-2\n"
    import zlib

    decompressor = zlib.decompressobj(31)
    assert decompressor.decompress(second) == body + b"tail-2\n"
    assert decompressor.eof and decompressor.unused_data == b""  # a single gzip member


async def test_status_page(client: Client, runtime: Runtime) -> None:
    page = await (await client.get("/")).text()
    assert "pending" in page  # nothing polled yet
    await runtime.poller.poll_all_once()
    response = await client.get("/")
    assert response.headers["Content-Type"].startswith("text/html")
    page = await response.text()
    assert '<a href="/metrics">' in page
    assert "<script>alert(1)</script>" not in page  # names are escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<tr class="account down" data-account="closed">' in page
    assert "account_inactive" in page and "Your account is not active!" in page
    assert "3 accounts, 1 down." in page
    for value in KEYS.values():
        assert value not in page


async def test_reload_endpoint_is_post_only(client: Client, runtime: Runtime) -> None:
    assert (await client.get("/-/reload")).status == 405
    response = await client.post("/-/reload")
    assert response.status == 200 and runtime.reloads == ["called"]  # type: ignore[attr-defined]


async def test_custom_telemetry_path(
    runtime: Runtime, aiohttp_client: Callable[[Any], Awaitable[Client]]
) -> None:
    runtime.telemetry_path = "/probe/metrics"
    client = await aiohttp_client(make_app(runtime))
    assert (await client.get("/probe/metrics")).status == 200
    assert (await client.get("/metrics")).status == 404
    assert 'href="/probe/metrics"' in await (await client.get("/")).text()


async def test_gzip_cache_compresses_a_new_version_anew() -> None:
    cache = GzipCache()
    pieces = [b"a" * 300_000, b"\n", b"b\n"]
    first = await cache.compress(1, pieces, b"t\n")
    assert gzip.decompress(first) == b"".join(pieces) + b"t\n"
    second = await cache.compress(2, [b"new\n"], b"t\n")
    assert gzip.decompress(second) == b"new\nt\n"
