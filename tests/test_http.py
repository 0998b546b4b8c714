"""exporter.http, the HTTP/1.1 client, against real local servers, on asyncio's loop and uvloop.

Framing, keep-alive, stale connections, compression, caps, broken answers, timeouts and TLS.
The vendor-level behaviour (classification, retries) is in test_client.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from rawhttp import Answer, RawServer, response
from test_webconfig import Pki

from exporter.http import HttpClient, HttpError

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
BODY = {"status": "success", "data": [{"source_name": "Newsletter", "impressions": 3}]}
RAW = json.dumps(BODY).encode()
QUERY = "rest_key=k&date_from=1&date_to=2"
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run a scenario on a fresh event loop of each kind (the daemon runs on uvloop)."""

    def runner(scenario: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop_runner:
            return loop_runner.run(asyncio.wait_for(scenario, 20))

    return runner


def client(url: str, max_body: int = 1 << 20, **kwargs: Any) -> HttpClient:
    return HttpClient(url, user_agent="test", max_body=max_body, **kwargs)


async def failure(request: Awaitable[object]) -> HttpError:
    with pytest.raises(HttpError) as info:
        await request
    return info.value


def chunked(*parts: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# -- framing and keep-alive ---------------------------------------------------------------------


def test_requests_share_one_kept_alive_connection(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY)) as server:
            http = client(server.url)
            answers = [await http.get(QUERY) for _ in range(3)]
            await http.close()
        assert [a.body for a in answers] == [RAW] * 3 and answers[0].status == 200
        assert server.connections == 1 and len(server.requests) == 3

    run(scenario())


def test_concurrent_requests_open_a_connection_each_and_reuse_them(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(Answer(response(BODY), delay=0.05)) as server:
            http = client(server.url)
            for _ in range(2):
                answers = await asyncio.gather(*(http.get(QUERY) for _ in range(5)))
                assert all(a.body == RAW for a in answers)
            await http.close()
        assert server.connections == 5 and len(server.requests) == 10

    run(scenario())


@pytest.mark.parametrize(
    "raw",
    [
        chunked(RAW[:10], RAW[10:]),
        response(gzip.compress(RAW), headers=("Content-Encoding: gzip",)),
        response(zlib.compress(RAW), headers=("Content-Encoding: deflate",)),
        response(zlib.compress(RAW)[2:-4], headers=("Content-Encoding: deflate",)),  # raw
        b"HTTP/1.1 100 Continue\r\n\r\n" + response(BODY),  # an interim answer first
    ],
    ids=["chunked", "gzip", "deflate", "raw-deflate", "100-continue"],
)
def test_every_framing_gives_the_same_body(run: Run[Any], raw: bytes) -> None:
    async def scenario() -> None:
        async with RawServer(raw) as server:
            http = client(server.url)
            assert (await http.get(QUERY)).body == RAW
            assert (await http.get(QUERY)).body == RAW
            await http.close()
        assert server.connections == 1

    run(scenario())


def test_a_body_ended_by_the_close_is_complete_and_the_connection_is_not_reused(
    run: Run[Any],
) -> None:
    async def scenario() -> None:
        until_close = Answer(response(BODY, length=False), close=True)
        async with RawServer(until_close) as server:
            http = client(server.url)
            assert [(await http.get(QUERY)).body for _ in range(2)] == [RAW, RAW]
        assert server.connections == 2

    run(scenario())


def test_connection_close_is_honoured(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY, headers=("Connection: close",))) as server:
            http = client(server.url)
            assert [(await http.get(QUERY)).body for _ in range(2)] == [RAW, RAW]
        assert server.connections == 2

    run(scenario())


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_an_error(
    run: Run[Any],
) -> None:
    """The server keeps the connection (no Connection: close) but drops it once idle."""

    async def scenario() -> None:
        async with RawServer(Answer(response(BODY), close=True)) as server:
            http = client(server.url)
            for _ in range(3):
                assert (await http.get(QUERY)).body == RAW
                await asyncio.sleep(0.05)  # the close reaches the client while idle
            await http.close()
        assert server.connections == 3

    run(scenario())


def test_a_close_racing_the_next_request_is_retried_on_a_new_connection(run: Run[Any]) -> None:
    """The request is written before the client learns of the close: sent again, once."""

    async def scenario() -> None:
        # The server reads the second request but closes without an answer.
        async with RawServer(response(BODY), Answer(b"", close=True), response(BODY)) as server:
            http = client(server.url)
            assert (await http.get(QUERY)).body == RAW
            (idle,) = http._idle
            assert (await http.get(QUERY)).body == RAW
            assert idle.closed
            await http.close()
        assert server.connections == 2 and len(server.requests) == 3

    run(scenario())


def test_idle_connections_expire(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY)) as server:
            http = client(server.url, keepalive=0.05)
            await http.get(QUERY)
            await asyncio.sleep(0.1)
            await http.get(QUERY)
            await http.close()
        assert server.connections == 2

    run(scenario())


def test_connections_idle_too_long_are_closed_by_the_next_request(run: Run[Any]) -> None:
    """Not only the one reused: those left over from a busier moment are closed too."""

    async def scenario() -> None:
        async with RawServer(Answer(response(BODY), delay=0.05)) as server:
            http = client(server.url, keepalive=0.2)
            await asyncio.gather(*(http.get(QUERY) for _ in range(4)))  # four connections
            left_over = list(http._idle)
            assert len(left_over) == 4
            await asyncio.sleep(0.3)
            assert (await http.get(QUERY)).body == RAW  # on a new connection
            assert all(c.closed for c in left_over) and len(http._idle) == 1
            await http.close()
        assert server.connections == 5

    run(scenario())


def test_bytes_nobody_asked_for_drop_the_connection(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY) + b"HTTP/1.1 200 OK\r\n") as server:
            http = client(server.url)
            assert (await http.get(QUERY)).body == RAW  # the answer itself is complete
            assert (await http.get(QUERY)).body == RAW
            await http.close()
        assert server.connections == 2

    run(scenario())


def test_close_closes_idle_connections(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY)) as server:
            http = client(server.url)
            await http.get(QUERY)
            (idle,) = http._idle
            await http.close()
            assert idle.closed and not http._idle
            assert (await http.get(QUERY)).body == RAW  # still usable, nothing kept after
            assert not http._idle

    run(scenario())


# -- caps, broken and malformed answers --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "declared"),
    [
        (response(b"x" * 2000), 2000),
        (chunked(b"x" * 600, b"x" * 600), None),
        (response(gzip.compress(b" " * 100_000), headers=("Content-Encoding: gzip",)), None),
    ],
    ids=["declared", "chunked", "decompressed"],
)
def test_bodies_over_the_cap_are_refused(run: Run[Any], raw: bytes, declared: int | None) -> None:
    async def scenario() -> None:
        async with RawServer(raw, response(BODY)) as server:
            http = client(server.url, max_body=1000)
            error = await failure(http.get(QUERY))
            assert (error.kind, error.declared) == (HttpError.TOO_LARGE, declared)
            assert (await http.get(QUERY)).body == RAW  # on a new connection
            await http.close()
        assert server.connections == 2

    run(scenario())


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (Answer(b"", close=True), HttpError.DISCONNECTED),
        (Answer(b"HTTP/1.1 200 OK\r\nContent-", close=True), HttpError.DISCONNECTED),
        (Answer(response(b"{}")[:-1], close=True), HttpError.BROKEN_BODY),
        (Answer(chunked(RAW)[:-7], close=True), HttpError.BROKEN_BODY),
        (Answer(b"SSH-2.0-OpenSSH_9.2\r\n"), HttpError.MALFORMED),
        (Answer(response(b"{}", headers=("Content-Length: 3",))), HttpError.MALFORMED),
        (Answer(response(RAW, headers=("Content-Encoding: br",))), HttpError.MALFORMED),
        (Answer(response(b"not gzip", headers=("Content-Encoding: gzip",))), HttpError.MALFORMED),
    ],
    ids=[
        "nothing",
        "half-a-head",
        "short-body",
        "short-chunked",
        "not-http",
        "two-lengths",
        "brotli",
        "bad-gzip",
    ],
)
def test_broken_answers_are_classified(run: Run[Any], answer: Answer, kind: str) -> None:
    async def scenario() -> None:
        async with RawServer(answer) as server:
            http = client(server.url)
            error = await failure(http.get(QUERY))
            assert error.kind == kind
            assert "127.0.0.1" not in str(error) and "rest_key" not in str(error)
            assert not http._idle  # a broken connection is never reused
            await http.close()
        assert len(server.requests) == 1  # a fresh connection's failure is not retried

    run(scenario())


def test_a_timeout_closes_the_connection(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(Answer(response(BODY), delay=5), response(BODY)) as server:
            http = client(server.url)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await http.get(QUERY)
            assert time.monotonic() - started < 2
            assert not http._idle
            assert (await http.get(QUERY)).body == RAW
            await http.close()
        assert server.connections == 2

    run(scenario())


def test_the_timeout_bounds_the_request(run: Run[Any]) -> None:
    """get(timeout=): past it, TimeoutError and the connection closed; in time, no trace of it."""

    async def scenario() -> None:
        answers = (response(BODY), Answer(response(BODY), delay=5), response(BODY))
        async with RawServer(*answers) as server:
            http = client(server.url)
            assert (await http.get(QUERY, timeout=0.3)).body == RAW
            await asyncio.sleep(0.5)  # the answered request's timer must not close the connection
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await http.get(QUERY, timeout=0.3)
            assert 0.25 < time.monotonic() - started < 2
            assert not http._idle
            assert (await http.get(QUERY, timeout=0.3)).body == RAW
            await http.close()
        assert server.connections == 2 and len(server.requests) == 3

    run(scenario())


def test_the_timeout_covers_a_body_that_stops_coming(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY)[:-5]) as server:
            http = client(server.url)
            with pytest.raises(TimeoutError):
                await http.get(QUERY, timeout=0.3)
            assert not http._idle
            await http.close()

    run(scenario())


def test_the_timeout_covers_connecting(run: Run[Any]) -> None:
    """A TLS handshake that never completes (a plain server that never answers it) times out."""

    async def scenario() -> None:
        async with RawServer(response(BODY)) as server:
            http = client(f"https://127.0.0.1:{server.port}/x")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await http.get(QUERY, timeout=0.3)
            assert time.monotonic() - started < 2
            await http.close()
        assert server.requests == []

    run(scenario())


# -- connecting ----------------------------------------------------------------------------------


def test_refused_and_unresolvable(run: Run[Any], unused_tcp_port: int) -> None:
    async def scenario() -> None:
        refused = await failure(client(f"http://127.0.0.1:{unused_tcp_port}/x").get(QUERY))
        assert (refused.kind, refused.detail) == (HttpError.CONNECT, "Connection refused")
        unknown = await failure(client("http://no-such-host.invalid/x").get(QUERY))
        assert unknown.kind == HttpError.CONNECT
        assert unknown.detail.startswith("name resolution failed")

    run(scenario())


def test_tls_is_verified(run: Run[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = Pki(tmp_path)
    issued = pki.issue("localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(issued.cert, issued.key)

    async def scenario() -> None:
        async with RawServer(response(BODY), tls=server_tls) as server:
            trusted = ssl.create_default_context(cafile=str(pki.ca_file))
            http = client(server.url, ssl_context=trusted)
            assert [(await http.get(QUERY)).body for _ in range(2)] == [RAW, RAW]
            await http.close()
            assert server.connections == 1
            error = await failure(client(server.url).get(QUERY))  # the system's CAs only
            assert error.kind == HttpError.CONNECT
            assert "CERTIFICATE_VERIFY_FAILED" in error.detail
            # OpenSSL's SSL_CERT_FILE (documented in the README) points the default elsewhere.
            monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
            assert (await client(server.url).get(QUERY)).body == RAW

    run(scenario())


def test_the_request_is_exact(run: Run[Any]) -> None:
    async def scenario() -> None:
        async with RawServer(response(BODY)) as server:
            url = server.url.replace("/traffic-source", "/traffic%20source") + "?v=2"
            await client(url).get(QUERY)
        assert server.requests == [
            b"GET /v1/partners-api/traffic%20source?v=2&" + QUERY.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(server.port).encode() + b"\r\nUser-Agent: test\r\n"
            b"Accept: application/json\r\nConnection: keep-alive\r\n\r\n"
        ]

    run(scenario())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.test/",
        "http:///path",
        "https://user:pw@example.test/",
        "https://example.test:99999/",
        "https://example.test/a b",
    ],
)
def test_urls_it_cannot_use(url: str) -> None:
    with pytest.raises(ValueError):
        client(url)


def test_a_user_agent_cannot_inject_headers() -> None:
    with pytest.raises(ValueError):
        HttpClient("http://example.test/", user_agent="x\r\nX-Evil: 1", max_body=10)
