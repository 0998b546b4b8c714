"""What the listening socket bounds: a deadline for request heads, and open connections capped
per client and in total.

aiohttp's server has neither (its only timer is keep-alive). Both are added on its public
surface: ``web.Server`` is the protocol factory ``loop.create_server`` takes, and
``ConnectionGuard`` wraps it. Each accepted connection is served by aiohttp's own protocol behind
a ``GuardedConnection``, which sees it open and its bytes arrive; a middleware tells it when
aiohttp has parsed a request head (the request reaches the application) and when the handler is
done. Nothing of aiohttp is subclassed or patched, and HTTP is parsed by aiohttp alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from exporter.clock import SYSTEM_CLOCK, Clock, Timer
from exporter.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

# A refused client is logged at most once per this many seconds (and the whole server once, for
# the total cap), so a flood cannot flood the log too.
LOG_INTERVAL = 60.0
_LOGGED_CLIENTS = 4096  # beyond this many remembered clients, forget those logged long ago

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ListenerLimits:
    """The bounds; 0 turns one off. ``max_connections`` None: what the open-files limit leaves
    (``Daemon.start`` decides)."""

    read_header_timeout: float = 60.0
    max_connections_per_client: int = 64
    max_connections: int | None = None

    def describe(self) -> str:
        """One line for the logs."""
        per_client = self.max_connections_per_client or "unlimited"
        total = self.max_connections or "unlimited"
        deadline = f"{self.read_header_timeout:g}s" if self.read_header_timeout else "none"
        return f"read_header_timeout={deadline} per_client={per_client} total={total}"


DEFAULT_LIMITS = ListenerLimits()


def client_of(peername: Any) -> str:
    """The client's address from a transport's ``peername`` (IPv4-mapped IPv6 as IPv4)."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername or "")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # a Unix socket has no address: all its clients are one
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


ProtocolFactory = Callable[[], asyncio.Protocol]


class ConnectionGuard:
    """The limits, applied to every connection of one listener.

    ``install`` the guard on the application before its runner is set up (so it learns when each
    request head has arrived), then listen with ``protocol_factory(runner.server)``.
    """

    def __init__(
        self,
        limits: ListenerLimits,
        *,
        metrics: SelfMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self._per_client: Tally[str] = Tally()
        self._open = 0
        self._logged: dict[str, tuple[float, int]] = {}  # client → (last logged, refused since)

    def protocol_factory(self, server: ProtocolFactory) -> Callable[[], GuardedConnection]:
        """For ``loop.create_server``: each connection served by ``server``'s protocol (aiohttp's
        ``web.Server``), behind the guard."""
        return lambda: GuardedConnection(self, server)

    @property
    def open_connections(self) -> int:
        return self._open

    def admit(self, client: str) -> bool:
        """Count a new connection from ``client``; False (and counted, logged) if refused."""
        limits = self.limits
        reason = None
        if limits.max_connections and self._open >= limits.max_connections:
            reason = "max_connections"
        elif (
            limits.max_connections_per_client
            and self._per_client[client] >= limits.max_connections_per_client
        ):
            reason = "per_client_limit"
        if reason is None:
            self._open += 1
            self._per_client[client] += 1
            return True
        if self.metrics is not None:
            self.metrics.http_connections_rejected.labels(reason).inc()
        self._log_refusal(client, reason)
        return False

    def release(self, client: str) -> None:
        """An admitted connection from ``client`` has closed."""
        self._open -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def _log_refusal(self, client: str, reason: str) -> None:
        key = client if reason == "per_client_limit" else "*"
        now = self.clock.monotonic()
        last, refused = self._logged.get(key, (None, 0))
        if last is not None and now - last < LOG_INTERVAL:
            self._logged[key] = (last, refused + 1)
            return
        if len(self._logged) >= _LOGGED_CLIENTS:
            self._logged = {k: v for k, v in self._logged.items() if now - v[0] < LOG_INTERVAL}
        self._logged[key] = (now, 0)
        if reason == "per_client_limit":
            log.warning(
                "connection refused: too many open connections from this client",
                extra={
                    "client": client,
                    "limit": self.limits.max_connections_per_client,
                    "refused_since_last_logged": refused,
                },
            )
        else:
            log.warning(
                "connection refused: too many open connections",
                extra={
                    "client": client,
                    "limit": self.limits.max_connections,
                    "refused_since_last_logged": refused,
                },
            )

    def timed_out(self, client: str) -> None:
        if self.metrics is not None:
            self.metrics.http_header_timeouts.inc()
        log.debug("request head not received in time, connection closed", extra={"client": client})

    def install(self, app: web.Application) -> None:
        """Tell the guard when a request head has arrived and when its handler is done."""

        @web.middleware
        async def head_received(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            connection = transport.get_protocol() if transport is not None else None
            if not isinstance(connection, GuardedConnection):
                return await handler(request)
            connection.request_started()
            try:
                return await handler(request)
            finally:
                connection.request_done(has_body=request.body_exists)

        # First: time spent checking credentials counts as handling, not as reading the head.
        app.middlewares.insert(0, head_received)


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol inside, the head deadline around it.

    The deadline runs from the connection's opening until the first request head has been
    parsed. After a response, it runs again from the first byte of the next request, or from
    the end of the response if the next request's bytes came while it was handled (pipelining).
    Idle time between requests is keep-alive's (aiohttp's ``keepalive_timeout``), as in Go's
    net/http. More bytes never move a deadline. Which bytes belong to which request is
    aiohttp's to know: a head completed in the same read as the previous request is timed from
    the next byte after the response, and never lasts beyond keep-alive.
    """

    __slots__ = (
        "_client", "_guard", "_inner", "_next_bytes", "_requests", "_server", "_timer",
        "_transport",
    )  # fmt: skip

    def __init__(self, guard: ConnectionGuard, server: ProtocolFactory) -> None:
        self._guard = guard
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._timer: Timer | None = None
        self._requests = 0  # requests in the application now
        self._next_bytes = False  # bytes arrived while a bodyless request was handled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream server's (uvloop's: duck-typed)
        self._client = client_of(transport.get_extra_info("peername"))
        if not self._guard.admit(self._client):
            transport.abort()  # at once: no request is read, nothing is sent
            return
        self._transport = transport
        self._inner = self._server()
        self._start_clock()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._requests:
            self._next_bytes = True
        elif self._timer is None:
            self._start_clock()  # the first bytes of the next request
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if self._inner is None:
            return
        self._guard.release(self._client)
        self._transport = None
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    # -- the head deadline ---------------------------------------------------------------------

    def request_started(self) -> None:
        """aiohttp has parsed a request head: the deadline is met."""
        self._requests += 1
        self._stop_clock()

    def request_done(self, *, has_body: bool) -> None:
        """The handler has returned; bytes already here start the next head's clock now."""
        self._requests -= 1
        # Bytes during a request with a body were most likely that body.
        if not self._requests and self._next_bytes and not has_body:
            self._start_clock()
        self._next_bytes = False

    def _start_clock(self) -> None:
        timeout = self._guard.limits.read_header_timeout
        if timeout > 0 and self._transport is not None:
            self._stop_clock()
            clock = self._guard.clock
            self._timer = clock.call_at(clock.monotonic() + timeout, self._expire)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self._requests:
            return
        if transport.get_write_buffer_size():
            # The last response is still being sent: the next head's clock starts after it.
            self._start_clock()
            return
        self._guard.timed_out(self._client)
        transport.close()
