"""A small HTTP/1.1 client for the one API endpoint: GETs over a pool of kept-alive connections.

Why not aiohttp's client (the server is aiohttp): at 10,000 accounts the poller sends 20,000
requests a cycle, and the cycle is bound by the exporter's CPU. aiohttp's client spends most of
its time on what this exporter never uses (cookies, redirects, proxies, multipart, tracing,
per-request header and URL objects); measured with ``python -m bench.client`` it cost 2-3 times
the CPU per request of this one (docs/benchmarks.md). This client does only what the exporter
needs: GET, keep-alive, bodies framed by Content-Length, chunked encoding or the connection's
close, gzip/deflate bodies, a body cap, a total timeout (one timer per request), and errors
whose text never holds the URL (the key travels in its query string).

Parsing is httptools (llhttp: Node.js's parser, also behind aiohttp's C parser); sockets, TLS
(certificates verified against the system's CAs, SNI) and DNS are asyncio's (uvloop's when
installed).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import socket
import ssl
import time
import urllib.parse
import zlib
from typing import NamedTuple, cast

import httptools

KEEPALIVE_SECONDS = 15.0  # an idle connection is not reused after this (servers close them)
DNS_TTL_SECONDS = 300.0


class HttpError(Exception):
    """A failure below HTTP's semantics. ``kind`` is one of the constants; the text is safe."""

    CONNECT = "connect"  # no connection could be made (refused, DNS, TLS handshake)
    DISCONNECTED = "disconnected"  # closed before a complete response head
    BROKEN_BODY = "broken_body"  # closed in the middle of the body
    MALFORMED = "malformed"  # not an HTTP response, or a bad one
    TOO_LARGE = "too_large"  # the body is over the cap (``declared`` if Content-Length said so)

    def __init__(self, kind: str, detail: str, *, declared: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.declared = declared


class Response(NamedTuple):
    status: int
    body: bytes  # decoded from gzip/deflate if the server compressed it
    retry_after: str | None  # the only response header the exporter reads


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the API URL (None: it can). The config checks with this too."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be http:// or https:// with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if not url.isascii() or any(c.isspace() for c in url):
        return "must be ASCII without spaces (percent-encode the rest)"
    return None


def user_agent_problem(user_agent: str) -> str | None:
    """Why ``user_agent`` cannot be sent as a header (None: it can)."""
    if not user_agent.isprintable():
        return "must be printable text on one line"
    return None


def _decompressed(body: bytes, encoding: bytes, cap: int) -> bytes:
    """The body without its gzip/deflate coding, at most ``cap`` bytes."""
    coding = encoding.strip().lower()
    if coding in (b"", b"identity"):
        return body
    if coding not in (b"gzip", b"x-gzip", b"deflate"):
        raise HttpError(HttpError.MALFORMED, "unsupported Content-Encoding")  # no server text
    # 47: gzip or zlib header, detected; "deflate" is sometimes sent raw (no header): -15.
    attempts = (47,) if coding != b"deflate" else (47, -15)
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        try:
            plain = decoder.decompress(body, cap + 1)
        except zlib.error:
            continue
        if len(plain) > cap:
            raise HttpError(HttpError.TOO_LARGE, "decompressed body over the cap")
        if decoder.eof:
            return plain
    raise HttpError(HttpError.MALFORMED, f"body is not valid {coding.decode('ascii')} data")


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False  # the last response completed and the server keeps the connection
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._cap = 0
        self._body: list[bytes] = []
        self._size = 0
        self._status = 0
        self._retry_after: str | None = None
        self._encoding = b""
        self._framed = False  # Content-Length or chunked (else the body ends with the connection)
        self._head_done = False
        self._received = False
        self._failure: HttpError | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and not self._framed and self._failure is None:
            self._complete()  # the body was delimited by the close
        elif self._head_done:
            self._fail(HttpError(HttpError.BROKEN_BODY, "the connection closed mid-body"))
        else:
            self._fail(HttpError(HttpError.DISCONNECTED, "closed without a response"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # bytes nobody asked for: the connection's state is unknown
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # a callback recorded its failure in _failure
        except httptools.HttpParserUpgrade:
            self._failure = HttpError(HttpError.MALFORMED, "the server switched protocols")
        except httptools.HttpParserError as exc:
            self._failure = HttpError(HttpError.MALFORMED, f"unparsable response ({exc})")
        if self._failure is not None:
            self._fail(self._failure)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head_done:  # a second response to one request
            self._failure = HttpError(HttpError.MALFORMED, "more than one response")
            raise self._failure

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self._framed = True
            if value.strip().isdigit() and int(value) > self._cap:
                self._failure = HttpError(
                    HttpError.TOO_LARGE, "declared body over the cap", declared=int(value)
                )
                raise self._failure
        elif lowered == b"transfer-encoding":
            self._framed = self._framed or b"chunked" in value.lower()
        elif lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered == b"content-encoding":
            self._encoding = value

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._cap:
            self._failure = HttpError(HttpError.TOO_LARGE, "body over the cap")
            raise self._failure
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._head_done = self._framed = False
            self._encoding, self._retry_after = b"", None
            return
        self._complete()

    # -- the exchange -------------------------------------------------------------------------

    def exchange(self, request: bytes, cap: int) -> asyncio.Future[Response]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._cap = cap
        self._body, self._size, self._status = [], 0, 0
        self._retry_after, self._encoding = None, b""
        self._framed = self._head_done = self._received = self.reusable = False
        self._failure = None
        self.transport.write(request)
        return self._waiter

    @property
    def received_nothing(self) -> bool:
        return not self._received

    def _complete(self) -> None:
        assert self._waiter is not None
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        if self._encoding:
            try:
                body = _decompressed(body, self._encoding, self._cap)
            except HttpError as exc:
                self._fail(exc)
                return
        self.reusable = not self.closed and self._parser.should_keep_alive()
        self._waiter.set_result(Response(self._status, body, self._retry_after))

    def time_out(self) -> None:
        """The request's time is up: it fails with ``TimeoutError``, the connection closes."""
        self._fail(TimeoutError())

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class HttpClient:
    """GETs to one URL (``query`` appended to it), over kept-alive connections.

    The caller bounds the concurrency (the poller's semaphore); the pool holds as many idle
    connections as were last in use, each reused for ``keepalive`` seconds at most.
    """

    def __init__(
        self,
        url: str,
        *,
        user_agent: str,
        max_body: int,
        keepalive: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(f"the API URL {problem}")
        problem = user_agent_problem(user_agent)
        if problem is not None:
            raise ValueError(f"the User-Agent {problem}")
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        )
        default_port = self._port == (443 if self._ssl else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if default_port else f"{host}:{self._port}"
        target = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        self._start = f"GET {target}?{parts.query + '&' if parts.query else ''}".encode("ascii")
        self._rest = (
            f" HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {user_agent}\r\n"
            "Accept: application/json\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        self._max_body = max_body
        self._keepalive = keepalive
        # Idle connections, in the order they became idle: reused from the right (the warmest),
        # dropped from the left once older than ``keepalive`` (not left open for ever).
        self._idle: collections.deque[_Connection] = collections.deque()
        self._addresses: list[tuple[int, tuple[str, int]]] = []
        self._resolved_at = -DNS_TTL_SECONDS
        self._closed = False

    async def get(self, query: str, *, timeout: float | None = None) -> Response:  # noqa: ASYNC109
        """One GET of ``url?query`` (``query`` already encoded); raises ``HttpError``.

        ``timeout`` bounds the whole request (connecting included): past it, ``TimeoutError``
        and the connection is closed, as when the caller cancels it. Kept to one timer per
        request, not ``asyncio.timeout`` (its context manager, task lookups and rescheduling
        cost more than the rest of a keep-alive request's own bookkeeping).
        A kept-alive connection that the server had closed in the meantime is not a failure:
        the request goes again on another, within the same timeout.
        """
        request = self._start + query.encode("ascii") + self._rest
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            connection = self._take_idle()
            reused = connection is not None
            if connection is None:
                if deadline is None:
                    connection = await self._connect()
                else:
                    async with asyncio.timeout_at(deadline):
                        connection = await self._connect()
            waiter = connection.exchange(request, self._max_body)
            timer = None if deadline is None else loop.call_at(deadline, connection.time_out)
            try:
                response = await waiter
            except HttpError as error:
                stale = error.kind == HttpError.DISCONNECTED and connection.received_nothing
                if reused and stale:
                    continue
                raise
            except BaseException:  # cancelled or timed out mid-exchange: never reuse it
                connection.abort()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if connection.reusable and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.abort()
            return response

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        oldest = time.monotonic() - self._keepalive
        while idle and idle[0].idle_since <= oldest:
            idle.popleft().abort()
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _resolve(self) -> list[tuple[int, tuple[str, int]]]:
        now = time.monotonic()
        if now - self._resolved_at < DNS_TTL_SECONDS and self._addresses:
            return self._addresses
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except socket.gaierror as exc:
            raise HttpError(HttpError.CONNECT, f"name resolution failed ({exc.strerror})") from None
        self._addresses = [(info[0], (str(info[4][0]), int(info[4][1]))) for info in infos]
        self._resolved_at = now
        return self._addresses

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        failure = HttpError(HttpError.CONNECT, "no address")
        for family, (address, port) in await self._resolve():
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    port,
                    family=family,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
            except ssl.SSLError as exc:  # before OSError: it is one
                reason = exc.reason or type(exc).__name__
                raise HttpError(HttpError.CONNECT, f"TLS handshake failed ({reason})") from None
            except OSError as exc:
                code = exc.errno or errno.EIO
                failure = HttpError(HttpError.CONNECT, os.strerror(code))
                continue
            return connection
        self._resolved_at = -DNS_TTL_SECONDS  # resolve again next time: the addresses may move
        raise failure

    async def close(self) -> None:
        """Close the idle connections; those in use close when their request ends.

        Requests under way finish normally (a reload retires a client that way), and any
        later request still works, on a connection closed after it. Cancelling a request
        closes its connection at once.
        """
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
        await asyncio.sleep(0)  # let the transports run their connection_lost
