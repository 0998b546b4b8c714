"""The fake vendor API served over HTTP on aiohttp's server, with the requests it received.

:class:`FakeApi` holds the accounts, the faults set and the recorded requests, and turns each
request into the vendor's answer (:mod:`exporter.fakeapi.vendor`) after the latency, changed
by the fault it meets (:mod:`exporter.fakeapi.faults`). The faults that act on the connection
(hang, trickle, reset, disconnect) live here. Its clocks are injectable, so tests drive the
latency and a trickle on a clock of their own instead of waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Self

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exporter.fakeapi.accounts import AccountState, FakeAccount
from exporter.fakeapi.faults import (
    DATA_FAULTS,
    Fault,
    FaultBook,
    FaultSpec,
    canned_answer,
    mangle,
    spoil,
)
from exporter.fakeapi.vendor import ENDPOINT_PATH, JSON_TYPE, PinnedRows, answer

#: How the fake waits a number of seconds (``asyncio.sleep``, or a test's clock).
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RecordedRequest:
    """One request the fake received, as received, and what it answered."""

    time: float  # the fake's monotonic clock on arrival
    method: str
    path: str
    rest_key: str | None
    date_from: str | None
    date_to: str | None
    status: int = 0  # the HTTP status sent; 0 while pending or when no response was sent
    kind: str = "pending"  # "success", a vendor error ("invalid_key", ...) or a Fault's value
    fault: Fault | None = None  # the fault that matched the request, if any
    window: tuple[int, int] | None = None  # the (date_from, date_to) the answer was computed for


class FakeApi:
    """The fake vendor API server, listening on 127.0.0.1 once started.

    ``clock`` gives the vendor's "now" (the default window ends there); ``monotonic`` and
    ``sleep`` are what the latency and a trickling body wait on (tests pass a clock of their
    own); ``record_requests=False`` keeps :attr:`requests` empty for long benchmarks.
    """

    def __init__(
        self,
        accounts: Iterable[FakeAccount] = (),
        *,
        latency: float = 0.0,
        error_status: int = 200,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        record_requests: bool = True,
    ) -> None:
        self._accounts: dict[str, FakeAccount] = {a.rest_key: a for a in accounts}
        self._pinned_rows: dict[str, PinnedRows] = {}
        self._faults = FaultBook()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._record = record_requests
        self._listener = _Listener(self._handle)
        self._released = asyncio.Event()  # set by close(): hanging requests end
        self._changes = _Changes()  # a request arrived or ended: for wait_until()
        self.latency = latency
        self.error_status = error_status
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    # ---- lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
    ) -> str:
        """Start listening (port 0: a free one) and return the endpoint URL.

        ``reuse_port``: several processes may listen on the port (``--workers``); the kernel
        spreads the connections over them.
        """
        if self._listener.started:
            raise RuntimeError("the fake API is already started")
        await self._listener.start(host, port, reuse_port=reuse_port)
        self._released.clear()
        return self.url

    @property
    def url(self) -> str:
        """The endpoint URL, ``http://HOST:PORT/v1/partners-api/traffic-source``."""
        host = self._listener.host
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal
        return f"http://{host}:{self.port}{ENDPOINT_PATH}"

    @property
    def port(self) -> int:
        """The port the fake listens on (kept across stop/resume_listening)."""
        if self._listener.port is None:
            raise RuntimeError("the fake API is not started")
        return self._listener.port

    async def close(self) -> None:
        """Stop serving; hanging and trickling requests are cut off."""
        self._released.set()
        await self._listener.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def stop_listening(self) -> None:
        """Refuse new connections (and drop idle kept-alive ones) until resume_listening()."""
        await self._listener.stop()

    async def resume_listening(self) -> None:
        """Listen again, on the same port."""
        await self._listener.resume()

    # ---- accounts

    @property
    def accounts(self) -> Mapping[str, FakeAccount]:
        """The served accounts by rest key (read-only view)."""
        return MappingProxyType(self._accounts)

    def add_account(self, account: FakeAccount) -> None:
        """Add an account, or replace the one with the same key."""
        self._accounts[account.rest_key] = account

    def remove_account(self, key: str) -> None:
        """Forget an account: its key becomes "Incorrect rest key!"."""
        del self._accounts[key]
        self._pinned_rows.pop(key, None)

    def set_state(self, key: str, state: AccountState) -> None:
        """Change an account's state."""
        self._accounts[key] = dataclasses.replace(self._accounts[key], state=AccountState(state))

    def set_rows(self, key: str, rows: Sequence[Mapping[str, object]] | None) -> None:
        """Serve exactly ``rows`` for ``key`` whatever the window (None: computed figures again).

        ``fake.set_rows(key, DOCUMENTED_EXAMPLE_ROWS)`` serves the vendor's documented example.
        """
        if key not in self._accounts:
            raise KeyError(key)
        if rows is None:
            self._pinned_rows.pop(key, None)
        else:
            self._pinned_rows[key] = tuple(dict(row) for row in rows)

    # ---- faults

    def set_fault(self, fault: Fault | None, *, key: str | None = None, **params: object) -> None:
        """Misbehave for requests with rest key ``key`` (None: every request; a key's own fault
        wins over the global one). ``fault=None`` clears that scope. See :class:`Fault` for the
        parameters; ``count=N`` heals after N matching requests.
        """
        self._faults.set(fault, key, params)

    def clear_faults(self) -> None:
        """Clear every fault, global and per key."""
        self._faults.clear()

    # ---- recorded traffic

    def count(self, key: str | None = None) -> int:
        """Requests received with rest key ``key`` (None: all requests)."""
        if key is None:
            return len(self.requests)
        return sum(1 for request in self.requests if request.rest_key == key)

    def requests_for(self, key: str) -> list[RecordedRequest]:
        """The recorded requests with rest key ``key``, oldest first."""
        return [request for request in self.requests if request.rest_key == key]

    def clear_requests(self) -> None:
        """Forget the recorded requests and the concurrency high-water mark."""
        self.requests.clear()
        self.max_in_flight = self.in_flight

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked now and whenever a request arrives or
        ends (e.g. ``lambda: fake.in_flight == 2``): no polling, no deadline of its own."""
        await self._changes.until(condition)

    # ---- serving

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        query = request.query
        record = RecordedRequest(
            time=self._monotonic(),
            method=request.method,
            path=request.path,
            rest_key=query.get("rest_key"),
            date_from=query.get("date_from"),
            date_to=query.get("date_to"),
        )
        if self._record:
            self.requests.append(record)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changes.notify()
        try:
            return await self._respond(request, record)
        finally:
            self.in_flight -= 1
            self._changes.notify()

    async def _respond(
        self, request: web.BaseRequest, record: RecordedRequest
    ) -> web.StreamResponse:
        if request.path != ENDPOINT_PATH:
            record.kind, record.status = "not_found", 404
            return web.Response(status=404, text="404: Not Found")
        if request.method not in ("GET", "HEAD"):
            record.kind, record.status = "method_not_allowed", 405
            return web.Response(
                status=405, text="405: Method Not Allowed", headers={"Allow": "GET"}
            )
        spec = self._faults.take(record.rest_key)
        record.fault = spec.fault if spec is not None else None
        # The latency is the time from the request to the answer, the fake's own work included
        # (as a vendor's answer time would be): under load, the answer is not later for it.
        deadline = record.time + self.latency
        if spec is not None:
            await self._until(deadline)  # faults act after the latency
            record.kind = spec.fault.value
            early = await _early_fault(
                request, record, spec, self._released, self.error_status, self._clock()
            )
            if early is not None:
                return early
        key = record.rest_key
        vendors = answer(
            self._accounts.get(key) if key else None,
            request.query,
            pinned=self._pinned_rows.get(key) if key else None,
            error_status=self.error_status,
            now=self._clock(),
            encoded=spec is None,  # nothing will change the rows
        )
        record.kind, record.window = vendors.kind, vendors.window
        if spec is not None and spec.fault in DATA_FAULTS and vendors.kind == "success":
            record.kind = spec.fault.value
            mangle(spec, vendors.payload)
        body = vendors.encoded()
        await self._until(deadline)
        if spec is None or (spec.fault in DATA_FAULTS and spec.fault is not Fault.OVERSIZE):
            return _reply(record, vendors.status, body, JSON_TYPE)
        record.kind = spec.fault.value
        if spec.fault is Fault.SLOW_BODY:
            return await _trickle(request, record, vendors.status, body, spec, self._sleep)
        if spec.fault is Fault.RESET:
            return await _reset(request, record, vendors.status, body)
        body, content_type = spoil(spec, body, JSON_TYPE)
        return _reply(record, vendors.status, body, content_type)

    async def _until(self, deadline: float) -> None:
        """Wait until ``deadline`` on the fake's monotonic clock; not at all if it has passed."""
        delay = deadline - self._monotonic()
        if delay > 0:
            await self._sleep(delay)


async def _early_fault(
    request: web.BaseRequest,
    record: RecordedRequest,
    spec: FaultSpec,
    released: asyncio.Event,
    error_status: int,
    now: float,
) -> web.StreamResponse | None:
    """The faults that answer without looking at the request (None: not one of them)."""
    if spec.fault is Fault.HANG:
        await released.wait()
        _drop_connection(request)
        return web.Response()
    if spec.fault is Fault.DISCONNECT:
        _drop_connection(request)
        return web.Response()
    canned = canned_answer(spec, error_status=error_status, now=now)
    if canned is None:
        return None
    return _reply(record, canned.status, canned.body, canned.content_type, canned.headers)


async def _trickle(
    request: web.BaseRequest,
    record: RecordedRequest,
    status: int,
    body: bytes,
    spec: FaultSpec,
    sleep: Sleep,
) -> web.StreamResponse:
    """Headers at once, then the body ``chunk_size`` bytes at a time over ``seconds``."""
    response = web.StreamResponse(status=status, headers={"Content-Type": JSON_TYPE})
    response.content_length = len(body)
    record.status = status
    await response.prepare(request)
    chunks = [body[i : i + spec.chunk_size] for i in range(0, len(body), spec.chunk_size)]
    pause = spec.seconds / max(len(chunks) - 1, 1)
    for number, chunk in enumerate(chunks):
        if number:
            await sleep(pause)
        await response.write(chunk)  # the first write also flushes the headers
    await response.write_eof()
    return response


def _reply(
    record: RecordedRequest,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    record.status = status
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


async def _reset(
    request: web.BaseRequest, record: RecordedRequest, status: int, body: bytes
) -> web.StreamResponse:
    """Headers and half the body, then the connection closed."""
    response = web.StreamResponse(status=status, headers={"Content-Type": JSON_TYPE})
    response.content_length = len(body)
    record.status = status
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    _drop_connection(request)
    return response


def _drop_connection(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


class _Changes:
    """Something changed: wakes whoever waits for a condition on it, to check it again."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked now and after each :meth:`notify`."""
        loop = asyncio.get_running_loop()
        while not condition():
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def notify(self) -> None:
        """Wake every waiter."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Listener:
    """aiohttp's low-level server for one handler, on a port that can stop and resume listening.

    No application, router or middleware: every path and method comes to the handler, which
    answers 404 and 405 itself, because in benchmarks the fake shares the machine with the
    exporter. handler_cancellation: a client that gives up ends its request in the handler too,
    so what is in flight is what clients have open. A short shutdown_timeout keeps close() fast.
    """

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]):
        self._handler = handler
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._busy: set[RequestHandler] = set()  # connections inside the handler
        self.host = "127.0.0.1"
        self.port: int | None = None

    @property
    def started(self) -> bool:
        """Between start() and close(), listening or not."""
        return self._runner is not None

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        """Listen on ``host:port`` (port 0: a free one, then in :attr:`port`)."""
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site, self.host = runner, site, host
        self.port = int(runner.addresses[0][1])

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._busy.add(request.protocol)
        try:
            return await self._handler(request)
        finally:
            self._busy.discard(request.protocol)

    async def stop(self) -> None:
        """Refuse new connections and drop idle kept-alive ones; busy ones end after answering."""
        if self._runner is None:
            raise RuntimeError("the fake API is not started")
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server
        if server is not None:
            for connection in server.connections:
                if connection in self._busy:
                    connection.close()  # after the response it is producing
                else:
                    connection.force_close()  # an idle kept-alive connection: now

    async def resume(self) -> None:
        """Listen again on the same port (after stop)."""
        if self._runner is None or self.port is None:
            raise RuntimeError("the fake API is not started")
        if self._site is None:
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self._site = site

    async def close(self) -> None:
        """Stop serving; handlers still running are cancelled."""
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
