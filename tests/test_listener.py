"""The listener's bounds on real sockets: the request-head deadline (on the injected clock) and
the connection caps, per client and in total.

The server is aiohttp's, behind ``ConnectionGuard``, as the daemon runs it; the application has
a quick route and one that answers only when the test lets it (a long response). Clients are
raw sockets, so a request can stop halfway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from exporter.listener import ConnectionGuard, ListenerLimits, client_of
from exporter.selfmetrics import SelfMetrics

HEAD = b"GET /quick HTTP/1.1\r\nHost: exporter\r\n"
REQUEST = HEAD + b"\r\n"
WAIT = 10  # real seconds a socket may take to show what already happened (generous)


@dataclass
class Served:
    port: int
    guard: ConnectionGuard
    registry: CollectorRegistry
    clock: FakeClock
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def rejected(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "retargeting_exporter_http_connections_rejected_total", {"reason": reason}
        )
        return value or 0.0

    def timeouts(self) -> float:
        value = self.registry.get_sample_value("retargeting_exporter_http_header_timeouts_total")
        return value or 0.0


ServeFn = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    runners: list[web.AppRunner] = []
    servers: list[asyncio.Server] = []

    async def start(**limits: float) -> Served:
        clock = FakeClock()
        metrics = SelfMetrics()
        guard = ConnectionGuard(ListenerLimits(**limits), metrics=metrics, clock=clock)
        served = Served(0, guard, metrics.registry, clock)

        async def quick(_request: web.Request) -> web.Response:
            return web.Response(text="quick\n")

        async def slow(_request: web.Request) -> web.Response:
            await served.release.wait()
            return web.Response(text="slow\n")

        app = web.Application()
        app.router.add_get("/quick", quick)
        app.router.add_get("/slow", slow)
        guard.install(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        assert runner.server is not None
        server = await asyncio.get_running_loop().create_server(
            guard.protocol_factory(runner.server), "127.0.0.1", 0
        )
        servers.append(server)
        served.port = server.sockets[0].getsockname()[1]
        return served

    yield start
    for server in servers:
        server.close()
    for runner in runners:
        await runner.cleanup()


class Conn:
    """A raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> bytes:
        """One response's status line and headers (and body, for the routes here)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        return head.split(b"\r\n")[0] + b" " + body

    async def answered(self) -> bool:
        """Send a request: True if answered, False if the connection was closed instead."""
        try:
            await self.send(REQUEST)
            return await self.response() == b"HTTP/1.1 200 OK quick\n"
        except (ConnectionError, asyncio.IncompleteReadError):
            return False

    async def closed(self) -> bool:
        """True once the server has closed the connection (False: it answered something)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), WAIT) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def test_a_head_that_is_not_complete_in_time_is_closed(serve: ServeFn) -> None:
    served = await serve(read_header_timeout=60)
    conn = await Conn.open(served.port)
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(59)
    await conn.send(b"Host: exporter\r\n\r\n")  # complete just in time: answered
    assert await conn.response() == b"HTTP/1.1 200 OK quick\n"

    late = await Conn.open(served.port)
    await late.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(60)
    assert await late.closed()
    assert served.timeouts() == 1
    silent = await Conn.open(served.port)  # nothing sent at all: the clock runs from the open
    await served.clock.advance(60)
    assert await silent.closed()
    assert served.timeouts() == 2
    conn.close()


async def test_trickling_header_lines_does_not_move_the_deadline(serve: ServeFn) -> None:
    served = await serve(read_header_timeout=60)
    conn = await Conn.open(served.port)
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    for n in range(5):  # a header line every 10 s
        await served.clock.advance(10)
        await conn.send(f"X-Trickle-{n}: yes\r\n".encode())
    await served.clock.advance(10)
    assert await conn.closed()
    assert served.timeouts() == 1


async def test_a_long_response_and_an_idle_keep_alive_are_not_cut(serve: ServeFn) -> None:
    served = await serve(read_header_timeout=60)
    conn = await Conn.open(served.port)
    await conn.send(b"GET /slow HTTP/1.1\r\nHost: exporter\r\n\r\n")
    await served.clock.advance(600)  # the handler takes ten minutes
    served.release.set()
    assert await conn.response() == b"HTTP/1.1 200 OK slow\n"
    await served.clock.advance(600)  # idle on keep-alive: not the head deadline's business
    await conn.send(REQUEST)
    assert await conn.response() == b"HTTP/1.1 200 OK quick\n"
    # The next head's clock starts with its first byte.
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(59)
    await conn.send(b"Host: exporter\r\n\r\n")
    assert await conn.response() == b"HTTP/1.1 200 OK quick\n"
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(60)
    assert await conn.closed()
    assert served.timeouts() == 1


async def test_a_pipelined_head_is_timed_from_the_end_of_the_response_before_it(
    serve: ServeFn,
) -> None:
    served = await serve(read_header_timeout=60)
    conn = await Conn.open(served.port)
    # Half of the next request comes while the first is handled, which takes five minutes.
    await conn.send(b"GET /slow HTTP/1.1\r\nHost: exporter\r\n\r\n")
    await served.clock.advance(1)
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(300)
    served.release.set()
    assert await conn.response() == b"HTTP/1.1 200 OK slow\n"
    await served.clock.advance(30)
    await conn.send(b"Host: exporter\r\n")  # no further byte restarts the clock
    await served.clock.advance(30)
    assert await conn.closed()
    assert served.timeouts() == 1


async def test_no_deadline_when_turned_off(serve: ServeFn) -> None:
    served = await serve(read_header_timeout=0)
    conn = await Conn.open(served.port)
    await conn.send(b"GET /quick HTTP/1.1\r\n")
    await served.clock.advance(3600)
    await conn.send(b"Host: exporter\r\n\r\n")
    assert await conn.response() == b"HTTP/1.1 200 OK quick\n"
    assert served.timeouts() == 0


async def test_connections_beyond_the_per_client_cap_are_closed_at_once(
    serve: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.listener")
    served = await serve(max_connections_per_client=3)
    held = [await Conn.open(served.port) for _ in range(3)]
    extra = [await Conn.open(served.port) for _ in range(4)]
    for conn in extra:
        assert await conn.closed()
    assert served.rejected("per_client_limit") == 4
    other = await Conn.open(served.port, source="127.0.0.2")  # another client is served
    await other.send(REQUEST)
    assert await other.response() == b"HTTP/1.1 200 OK quick\n"
    for conn in held:  # and so are the first three
        await conn.send(REQUEST)
        assert await conn.response() == b"HTTP/1.1 200 OK quick\n"
    refusals = [r for r in caplog.records if "too many open connections" in r.getMessage()]
    assert len(refusals) == 1  # logged once a minute per client at most
    assert refusals[0].__dict__["client"] == "127.0.0.1"

    await served.clock.advance(61)
    assert await (await Conn.open(served.port)).closed()
    refusals = [r for r in caplog.records if "too many open connections" in r.getMessage()]
    assert len(refusals) == 2
    assert refusals[1].__dict__["refused_since_last_logged"] == 3


async def test_a_place_freed_is_given_to_the_next_connection(serve: ServeFn) -> None:
    served = await serve(max_connections_per_client=1)
    first = await Conn.open(served.port)
    assert await (await Conn.open(served.port)).closed()
    first.close()
    await first.writer.wait_closed()
    for _ in range(50):  # the server learns of the close within a few loop rounds
        if await (await Conn.open(served.port)).answered():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the place of a closed connection was never given again")


async def test_the_total_cap_holds_across_clients(serve: ServeFn) -> None:
    served = await serve(max_connections=2, max_connections_per_client=0)
    a = await Conn.open(served.port, source="127.0.0.1")
    b = await Conn.open(served.port, source="127.0.0.2")
    c = await Conn.open(served.port, source="127.0.0.3")
    assert await c.closed()
    assert served.rejected("max_connections") == 1
    assert served.rejected("per_client_limit") == 0
    for conn in (a, b):
        await conn.send(REQUEST)
        assert await conn.response() == b"HTTP/1.1 200 OK quick\n"


@pytest.mark.parametrize(
    ("peername", "client"),
    [
        (("127.0.0.1", 5000), "127.0.0.1"),
        (("::ffff:10.0.0.7", 5000, 0, 0), "10.0.0.7"),
        (("fe80::1%eth0", 5000, 0, 2), "fe80::1"),
        (("2001:db8::1", 5000, 0, 0), "2001:db8::1"),
        ("", ""),
    ],
)
def test_clients_are_told_apart_by_address(peername: object, client: str) -> None:
    assert client_of(peername) == client
