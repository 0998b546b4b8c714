"""A faithful local stand-in for the Retargeting "Traffic Source" partners API.

It answers like the vendor documents (see ``retargeting-api.md``): the same query parameters,
the same success and error bodies, the 30-day rule. The figures are a deterministic function of
``(seed, source, date_from, date_to)`` (:func:`traffic_rows`), so a test or the backfill can compute
the answer to any window without asking. On top of that it can misbehave on demand
(:class:`Fault`), per key or for every request, to prove the exporter survives what the vendor
did not document.

Used by ``--demo``, by the test suite and by the benchmarks; the request path stays cheap (a
window of any length costs a few prefix-sum lookups per source).

``python -m exporter.fakeapi --port 8080`` serves the demo accounts until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import gc
import hashlib
import http
import itertools
import json
import math
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType, TracebackType
from typing import Final, Self, cast

import httptools
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exporter import eventloop

__all__ = [
    "DEMO_REVOKED_KEY",
    "DOCUMENTED_EXAMPLE_ROWS",
    "DOCUMENTED_SOURCES",
    "ENDPOINT_PATH",
    "MAX_WINDOW_SECONDS",
    "SERVERS",
    "AccountState",
    "FakeAccount",
    "FakeApi",
    "Fault",
    "RecordedRequest",
    "demo_accounts",
    "generated_accounts",
    "main",
    "traffic_rows",
]

DOCUMENTED_SOURCES: tuple[str, ...] = ("Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups")
ENDPOINT_PATH = "/v1/partners-api/traffic-source"
MAX_WINDOW_SECONDS = 30 * 86400

#: The key the demo uses for its "revoked key" account; deliberately not served by the fake.
DEMO_REVOKED_KEY = "demo-key-revoked"

#: The rows of the vendor's documented success example, oddities included (Pop-ups reports
#: ctr "1.00" with no impressions; Rec. Engine's cvr 3.15 is not 219 / 7056). Pin them on a key
#: with :meth:`FakeApi.set_rows` to serve the documented body exactly.
DOCUMENTED_EXAMPLE_ROWS: tuple[Mapping[str, object], ...] = tuple(
    MappingProxyType(row)
    for row in (
        {
            "impressions": 339895,
            "click": 4629,
            "order": 16,
            "revenue": 3849,
            "source_name": "Newsletter",
            "cvr": "0.35",
            "ctr": "1.36",
        },
        {
            "impressions": 14056,
            "click": 1743,
            "order": 19,
            "revenue": 3926,
            "source_name": "Triggered Emails",
            "cvr": "1.09",
            "ctr": "12.40",
        },
        {
            "impressions": 291737,
            "click": 7056,
            "order": 219,
            "revenue": 54635,
            "source_name": "Rec. Engine",
            "cvr": "3.15",
            "ctr": "2.42",
        },
        {
            "impressions": 0,
            "click": 0,
            "order": 0,
            "revenue": 0,
            "source_name": "Pop-ups",
            "cvr": "0.00",
            "ctr": "1.00",
        },
    )
)

_COUNT_FIELDS: Final = ("impressions", "click", "order", "revenue")


class AccountState(StrEnum):
    """The vendor's account states; the first three are served, the last two refused."""

    PAID = "paid"
    PAYMENT_ERROR = "payment_error"
    SUSPENDED = "suspended"
    INACTIVE = "inactive"
    CLOSED = "closed"

    @property
    def served(self) -> bool:
        """Whether the vendor answers with data for an account in this state."""
        return self in (AccountState.PAID, AccountState.PAYMENT_ERROR, AccountState.SUSPENDED)


@dataclass(frozen=True)
class FakeAccount:
    """One client account of the fake vendor."""

    rest_key: str
    state: AccountState = AccountState.PAID
    seed: int = 0
    sources: tuple[str, ...] = DOCUMENTED_SOURCES


# --------------------------------------------------------------------------------------------
# Figures: every metric is the integral over the window of an hourly rate
#   rate(t) = base * shape[(hour(t) + offset) mod PERIOD]
# where shape is one shared table (a daily sine, a weekly sine and a hash-derived wobble per
# hour) and base/offset depend on (seed, source, metric). A prefix sum over the table makes any
# window, partial hours included, cost O(1).

_HOUR: Final = 3600
_PERIOD_HOURS: Final = 168 * 390  # a multiple of a day and a week; ≈7.5 years until it repeats


@dataclass(frozen=True, slots=True)
class _Shape:
    values: list[float]
    prefix: list[float]  # prefix[i] = sum(values[:i])
    total: float


@functools.cache
def _shape() -> _Shape:
    # shake_256 is a deterministic byte stream: the same wobble on every machine and run.
    wobble = hashlib.shake_256(b"retargeting-exporter/fakeapi/shape/v1").digest(_PERIOD_HOURS)
    daily = [0.55 * math.sin(2 * math.pi * (hour - 13) / 24) for hour in range(24)]  # peak 19:00
    weekly = [0.12 * math.sin(2 * math.pi * hour / 168) for hour in range(168)]
    values = [
        1.0 + daily[k % 24] + weekly[k % 168] + 0.6 * (wobble[k] / 255 - 0.5)
        for k in range(_PERIOD_HOURS)
    ]
    prefix = list(itertools.accumulate(values, initial=0.0))
    return _Shape(values, prefix, prefix[-1])


def _cumulative(shape: _Shape, second: int, offset: int) -> float:
    """Integral of the shape (in hours) from the epoch up to ``second``."""
    hour, rest = divmod(second, _HOUR)
    cycles, index = divmod(hour + offset, _PERIOD_HOURS)
    return cycles * shape.total + shape.prefix[index] + shape.values[index] * rest / _HOUR


@dataclass(frozen=True, slots=True)
class _Profile:
    """Per-hour base rates of one source of one account, and the shape offset of each metric."""

    rates: tuple[float, float, float, float]  # impressions, clicks, orders, revenue per hour
    offsets: tuple[int, int, int, int]


# impressions per hour, ctr, cvr, average order value: close to the vendor's 30-day example.
_BASE_PROFILES: Final[Mapping[str, tuple[float, float, float, float]]] = {
    "Newsletter": (470.0, 0.0136, 0.0035, 240.0),
    "Triggered Emails": (20.0, 0.124, 0.011, 205.0),
    "Rec. Engine": (405.0, 0.0242, 0.031, 250.0),
    "Pop-ups": (60.0, 0.04, 0.015, 180.0),
}


def _unit(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) named by ``parts``."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@functools.lru_cache(maxsize=1 << 16)
def _profile(seed: int, source: str) -> _Profile:
    base = _BASE_PROFILES.get(source)
    if base is None:  # an undocumented source: its own shape, the same for every account
        base = (
            20.0 + 280.0 * _unit(source, "impressions"),
            0.01 + 0.07 * _unit(source, "ctr"),
            0.005 + 0.025 * _unit(source, "cvr"),
            100.0 + 200.0 * _unit(source, "aov"),
        )
    impressions, ctr, cvr, order_value = base
    impressions *= 0.5 + 1.5 * _unit(seed, source, "scale")
    ctr *= 0.8 + 0.4 * _unit(seed, source, "ctr")
    cvr *= 0.8 + 0.4 * _unit(seed, source, "cvr")
    order_value *= 0.8 + 0.4 * _unit(seed, source, "aov")
    if source == "Pop-ups" and seed % 2 == 0:
        # Like the vendor's example: a source that exists but never shows anything.
        impressions = 0.0
    clicks = impressions * ctr
    orders = clicks * cvr
    # A shared phase keeps the metrics of a source peaking together (a "time zone"); whole
    # weeks apart, each metric still gets its own wobble.
    phase = int(_unit(seed, source, "phase") * 7) - 3
    weeks = _PERIOD_HOURS // 168
    offsets = tuple(
        phase + 168 * int(_unit(seed, source, metric) * weeks) for metric in _COUNT_FIELDS
    )
    return _Profile(
        (impressions, clicks, orders, orders * order_value),
        (offsets[0], offsets[1], offsets[2], offsets[3]),
    )


def _window_total(shape: _Shape, rate: float, offset: int, date_from: int, date_to: int) -> int:
    if rate == 0.0:
        return 0
    hours = _cumulative(shape, date_to, offset) - _cumulative(shape, date_from, offset)
    return round(rate * hours)


# One row's values in the vendor's field order (impressions, click, order, revenue, source_name,
# cvr, ctr): the dicts of traffic_rows() and the bytes of success_body() are both made from these.
_Row = tuple[int, int, int, int, str, str, str]
_ROW_FIELDS: Final = ("impressions", "click", "order", "revenue", "source_name", "cvr", "ctr")


def _rows(account: FakeAccount, date_from: int, date_to: int) -> list[_Row]:
    if date_to < date_from:
        raise ValueError("date_to is before date_from")
    shape = _shape()
    rows: list[_Row] = []
    for source in account.sources:
        profile = _profile(account.seed, source)
        rates, offsets = profile.rates, profile.offsets
        impressions = _window_total(shape, rates[0], offsets[0], date_from, date_to)
        clicks = min(_window_total(shape, rates[1], offsets[1], date_from, date_to), impressions)
        orders = min(_window_total(shape, rates[2], offsets[2], date_from, date_to), clicks)
        revenue = _window_total(shape, rates[3], offsets[3], date_from, date_to) if orders else 0
        cvr = f"{orders / clicks * 100:.2f}" if clicks else "0.00"
        ctr = f"{clicks / impressions * 100:.2f}" if impressions else "1.00"
        rows.append((impressions, clicks, orders, revenue, source, cvr, ctr))
    return rows


def traffic_rows(account: FakeAccount, date_from: int, date_to: int) -> list[dict[str, object]]:
    """Deterministic vendor-shaped rows for the window ``[date_from, date_to)`` (Unix seconds).

    One row per source of the account, in the vendor's field order: integer ``impressions``,
    ``click``, ``order`` and ``revenue``, then ``source_name``, then ``cvr`` and ``ctr`` as strings
    with two decimals. The same window always gives the same rows; windows of any length and
    alignment work (partial hours count proportionally). The 30-day rule is the API's, not
    enforced here. A source with no impressions reports ctr ``"1.00"``, like the vendor.
    """
    return [dict(zip(_ROW_FIELDS, row, strict=True)) for row in _rows(account, date_from, date_to)]


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> str:
    return json.dumps(text)


def success_body(account: FakeAccount, date_from: int, date_to: int) -> bytes:
    """``json.dumps({"status": "success", "data": traffic_rows(...)})``, written directly.

    The same bytes (tests/test_fakeapi.py checks), at a fraction of the cost: a benchmark's
    fake answers 20,000 of these a cycle on the exporter's two cores.
    """
    parts = [
        f'{{"impressions": {i}, "click": {c}, "order": {o}, "revenue": {r}, '
        f'"source_name": {_json_string(name)}, "cvr": "{cvr}", "ctr": "{ctr}"}}'
        for i, c, o, r, name, cvr, ctr in _rows(account, date_from, date_to)
    ]
    return f'{{"status": "success", "data": [{", ".join(parts)}]}}'.encode()


# --------------------------------------------------------------------------------------------
# Documented bodies

_INVALID_KEY: Final = {"status": "error", "message": "Incorrect rest key!"}
_ACCOUNT_INACTIVE: Final = {"status": "error", "message": "Your account is not active!"}
_INTERVAL_TOO_LONG: Final = {"status": "error", "message": "Interval is greater than 30 days"}
_SOMETHING_WENT_WRONG: Final = {"status": "error", "message": "Something went wrong"}
_VALIDATION_FAILED: Final = {
    "status": "fail",
    "data": {
        "validator": {"date_from": ["The date from field is required when date to is present."]}
    },
}
_RATE_LIMITED: Final = {"status": "error", "message": "Too Many Attempts."}

_JSON: Final = "application/json"
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class Fault(StrEnum):
    """Ways the fake can misbehave. Parameters are given to :meth:`FakeApi.set_fault`.

    Every fault accepts ``count`` (apply to the next N matching requests, then heal).
    """

    # transport
    HANG = "hang"  # never answer (until the client gives up or the fake closes)
    SLOW_BODY = "slow_body"  # headers, then the body a few bytes at a time: seconds, chunk_size
    RESET = "reset"  # headers and half the body, then the connection is closed
    DISCONNECT = "disconnect"  # the connection is closed without any response
    HTML_5XX = "html_5xx"  # a proxy's HTML error page: status (default 502)
    RATE_LIMIT = "rate_limit"  # 429 + Retry-After: retry_after, retry_after_form, status
    # body
    TRUNCATED_JSON = "truncated_json"  # the normal body cut in half (Content-Length matches)
    WRONG_CONTENT_TYPE = "wrong_content_type"  # the normal body served as text/html
    OVERSIZE = "oversize"  # a success body padded beyond 2 MiB: size (bytes, default 3 MiB)
    INVALID_UTF8 = "invalid_utf8"  # the normal body with invalid UTF-8 bytes in a string
    # data (applied to success answers; a request that fails anyway gets the plain error)
    NUMBERS_AS_STRINGS = "numbers_as_strings"  # "339895" instead of 339895
    NEGATIVE_NUMBERS = "negative_numbers"  # counts negated (0 becomes -1)
    FLOATS_FOR_INTS = "floats_for_ints"  # counts + 0.5
    NAN_STRINGS = "nan_strings"  # ctr "NaN", cvr "Infinity", click "NaN"; bare=True: JSON NaN
    HUGE_INTEGERS = "huge_integers"  # impressions and revenue 10**30
    MISSING_FIELDS = "missing_fields"  # fields (default ("click",)) dropped from every row
    EXTRA_FIELDS = "extra_fields"  # unknown fields in every row and at the top level
    DUPLICATE_SOURCES = "duplicate_sources"  # the first row once more
    EMPTY_DATA = "empty_data"  # data: []
    DATA_NOT_LIST = "data_not_list"  # data: {}
    RATES_AS_NUMBERS = "rates_as_numbers"  # ctr 1.36 instead of "1.36"
    # documented vendor errors, on demand: status (default: the fake's error_status)
    INVALID_KEY = "invalid_key"
    ACCOUNT_INACTIVE = "account_inactive"
    INTERVAL_TOO_LONG = "interval_too_long"
    VALIDATION_FAILED = "validation_failed"
    SOMETHING_WENT_WRONG = "something_went_wrong"


_VENDOR_ERRORS: Final[Mapping[Fault, Mapping[str, object]]] = {
    Fault.INVALID_KEY: _INVALID_KEY,
    Fault.ACCOUNT_INACTIVE: _ACCOUNT_INACTIVE,
    Fault.INTERVAL_TOO_LONG: _INTERVAL_TOO_LONG,
    Fault.VALIDATION_FAILED: _VALIDATION_FAILED,
    Fault.SOMETHING_WENT_WRONG: _SOMETHING_WENT_WRONG,
}

_FAULT_PARAMS: Final[Mapping[Fault, frozenset[str]]] = {
    Fault.SLOW_BODY: frozenset({"seconds", "chunk_size"}),
    Fault.HTML_5XX: frozenset({"status"}),
    Fault.RATE_LIMIT: frozenset({"retry_after", "retry_after_form", "status"}),
    Fault.OVERSIZE: frozenset({"size"}),
    Fault.NAN_STRINGS: frozenset({"bare"}),
    Fault.MISSING_FIELDS: frozenset({"fields"}),
    **{fault: frozenset({"status"}) for fault in _VENDOR_ERRORS},
}


@dataclass(slots=True)
class _FaultSpec:
    fault: Fault
    remaining: int | None = None  # None: until cleared
    status: int | None = None
    seconds: float = 2.0
    chunk_size: int = 8
    retry_after: float | str | None = 1
    retry_after_form: str = "seconds"
    size: int = 3 * 1024 * 1024
    bare: bool = False
    fields: tuple[str, ...] = ("click",)


def _fault_spec(fault: Fault, params: Mapping[str, object]) -> _FaultSpec:
    """Check the parameters of a fault now, so a typo fails the test that made it."""
    allowed = _FAULT_PARAMS.get(fault, frozenset()) | {"count"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"fault {fault.value} takes no parameter(s) {', '.join(unknown)}")
    spec = _FaultSpec(Fault(fault))
    for name, value in params.items():
        ok = True
        if name == "count":
            ok = value is None or (type(value) is int and value >= 1)
        elif name in ("status", "chunk_size", "size"):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif name == "seconds":
            ok = isinstance(value, int | float) and value >= 0
        elif name == "retry_after":
            ok = value is None or isinstance(value, int | float | str)
        elif name == "retry_after_form":
            ok = value in ("seconds", "http-date")
        elif name == "bare":
            ok = isinstance(value, bool)
        elif name == "fields":
            ok = isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value  # type: ignore[arg-type]
        if not ok:
            raise ValueError(f"fault {fault.value}: invalid {name}={value!r}")
        setattr(spec, "remaining" if name == "count" else name, value)
    return spec


@dataclass(slots=True)
class RecordedRequest:
    """One request the fake received, as received, and what it answered."""

    time: float  # time.monotonic() on arrival
    method: str
    path: str
    rest_key: str | None
    date_from: str | None
    date_to: str | None
    status: int = 0  # the HTTP status sent; 0 while pending or when no response was sent
    kind: str = "pending"  # "success", a vendor error ("invalid_key", ...) or a Fault's value
    fault: Fault | None = None  # the fault that matched the request, if any
    window: tuple[int, int] | None = None  # the (date_from, date_to) the answer was computed for


@dataclass(frozen=True, slots=True)
class _Answer:
    kind: str
    status: int
    payload: dict[str, object]
    window: tuple[int, int] | None = None
    body: bytes | None = None  # already encoded (then ``payload`` is empty)

    def encoded(self) -> bytes:
        return self.body if self.body is not None else _as_bytes(self.payload)


async def _until(deadline: float) -> None:
    """Sleep until ``deadline`` (the loop's clock); no wait if it has passed."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def _as_bytes(payload: Mapping[str, object]) -> bytes:
    # json.dumps' default separators: the documented error bodies come out byte-identical.
    return json.dumps(payload).encode()


def _int_counts(rows: list[dict[str, object]], change: Callable[[int], object]) -> None:
    for row in rows:
        for name in _COUNT_FIELDS:
            value = row.get(name)
            if isinstance(value, int):
                row[name] = change(value)


def _mangle(spec: _FaultSpec, payload: dict[str, object], rows: list[dict[str, object]]) -> None:
    """Apply a data fault to a success payload (whose ``data`` is ``rows``)."""
    fault = spec.fault
    if fault is Fault.NUMBERS_AS_STRINGS:
        _int_counts(rows, str)
    elif fault is Fault.NEGATIVE_NUMBERS:
        _int_counts(rows, lambda value: -value if value else -1)
    elif fault is Fault.FLOATS_FOR_INTS:
        _int_counts(rows, lambda value: value + 0.5)
    elif fault is Fault.NAN_STRINGS:
        for row in rows:
            if spec.bare:
                row.update(ctr=math.nan, cvr=math.inf, click=math.nan)
            else:
                row.update(ctr="NaN", cvr="Infinity", click="NaN")
    elif fault is Fault.HUGE_INTEGERS:
        for row in rows:
            row.update(impressions=10**30, revenue=10**30)
    elif fault is Fault.MISSING_FIELDS:
        for row in rows:
            for name in spec.fields:
                row.pop(name, None)
    elif fault is Fault.EXTRA_FIELDS:
        for number, row in enumerate(rows, start=1):
            row.update(source_id=number, currency="RON", updated_at="2024-05-01 12:00:00")
        payload["meta"] = {"api_version": "1.1", "cached": False}
    elif fault is Fault.DUPLICATE_SOURCES:
        if rows:
            rows.append(dict(rows[0]))
    elif fault is Fault.EMPTY_DATA:
        payload["data"] = []
    elif fault is Fault.DATA_NOT_LIST:
        payload["data"] = {}
    elif fault is Fault.RATES_AS_NUMBERS:
        for row in rows:
            for name in ("ctr", "cvr"):
                value = row.get(name)
                if isinstance(value, str):
                    row[name] = float(value)


_DATA_FAULTS: Final = frozenset(
    {
        Fault.NUMBERS_AS_STRINGS,
        Fault.NEGATIVE_NUMBERS,
        Fault.FLOATS_FOR_INTS,
        Fault.NAN_STRINGS,
        Fault.HUGE_INTEGERS,
        Fault.MISSING_FIELDS,
        Fault.EXTRA_FIELDS,
        Fault.DUPLICATE_SOURCES,
        Fault.EMPTY_DATA,
        Fault.DATA_NOT_LIST,
        Fault.RATES_AS_NUMBERS,
        Fault.OVERSIZE,
    }
)


def _html_page(status: int) -> str:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


class FakeApi:
    """The fake vendor API server, listening on 127.0.0.1 once started.

    ``clock`` gives the vendor's "now" (the default window ends there); ``record_requests=False``
    keeps :attr:`requests` empty for long benchmarks.

    ``lean=True`` serves the same answers from a lean HTTP/1.1 server (:class:`_LeanConnection`)
    instead of aiohttp's, at under half the CPU per request; it cannot misbehave
    (:meth:`set_fault` refuses). The benchmarks use it: the fake shares the exporter's two cores.
    """

    def __init__(
        self,
        accounts: Iterable[FakeAccount] = (),
        *,
        latency: float = 0.0,
        error_status: int = 200,
        clock: Callable[[], float] = time.time,
        record_requests: bool = True,
        lean: bool = False,
    ) -> None:
        self._accounts: dict[str, FakeAccount] = {a.rest_key: a for a in accounts}
        self._pinned_rows: dict[str, tuple[dict[str, object], ...]] = {}
        self._faults: dict[str, _FaultSpec] = {}
        self._global_fault: _FaultSpec | None = None
        self._clock = clock
        self._record = record_requests
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._released = asyncio.Event()
        self._busy: set[RequestHandler] = set()  # connections inside _handle
        self._lean = lean
        self._lean_server: asyncio.Server | None = None
        self._lean_connections: set[_LeanConnection] = set()
        self._refusing = False  # lean: stopped by stop_listening(), not closed
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
        if self._runner is not None or self._lean_server is not None:
            raise RuntimeError("the fake API is already started")
        if self._lean:
            self._host = host
            await self._lean_listen(port, reuse_port)
            self._released.clear()
            return self.url
        # aiohttp's low-level server: every path and method comes to _handle (it answers 404
        # and 405 itself), with no application, router or middleware in between (a tenth of the
        # fake's CPU per request, which shares the machine with the exporter in benchmarks).
        # handler_cancellation: a client that gives up ends its request here too, so in_flight
        # reflects what the client has open. A short shutdown_timeout keeps close() fast.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site, self._host = runner, site, host
        self._port = int(runner.addresses[0][1])
        self._released.clear()
        return self.url

    @property
    def url(self) -> str:
        """The endpoint URL, ``http://HOST:PORT/v1/partners-api/traffic-source``."""
        if self._port is None:
            raise RuntimeError("the fake API is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal
        return f"http://{host}:{self._port}{ENDPOINT_PATH}"

    @property
    def port(self) -> int:
        """The port the fake listens on (kept across stop/resume_listening)."""
        if self._port is None:
            raise RuntimeError("the fake API is not started")
        return self._port

    async def _lean_listen(self, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _LeanConnection(self), self._host, port, reuse_port=reuse_port or None
        )
        self._lean_server, self._refusing = server, False
        self._port = int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop serving; hanging and trickling requests are cut off."""
        self._released.set()
        listener, self._lean_server, self._refusing = self._lean_server, None, False
        if listener is not None:
            listener.close()
        for connection in list(self._lean_connections):
            connection.abort()
        if listener is not None:
            await listener.wait_closed()
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

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
        if self._lean:
            if self._lean_server is None and not self._refusing:
                raise RuntimeError("the fake API is not started")
            listener, self._lean_server, self._refusing = self._lean_server, None, True
            if listener is not None:
                listener.close()
            for lean_connection in list(self._lean_connections):
                lean_connection.close_when_idle()
            return
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

    async def resume_listening(self) -> None:
        """Listen again, on the same port."""
        if self._lean:
            if self._port is None or (self._lean_server is None and not self._refusing):
                raise RuntimeError("the fake API is not started")
            if self._lean_server is None:
                await self._lean_listen(self._port)
            return
        if self._runner is None or self._port is None:
            raise RuntimeError("the fake API is not started")
        if self._site is None:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            self._site = site

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
        parameters; ``count=N`` heals after N matching requests. Not with ``lean=True``.
        """
        if fault is not None and self._lean:
            raise RuntimeError("the lean server cannot misbehave: use FakeApi(lean=False)")
        if fault is None:
            if params:
                raise TypeError("clearing a fault takes no parameters")
            if key is None:
                self._global_fault = None
            else:
                self._faults.pop(key, None)
            return
        spec = _fault_spec(Fault(fault), params)
        if key is None:
            self._global_fault = spec
        else:
            self._faults[key] = spec

    def clear_faults(self) -> None:
        """Clear every fault, global and per key."""
        self._faults.clear()
        self._global_fault = None

    def _take_fault(self, key: str | None) -> _FaultSpec | None:
        spec = self._faults.get(key) if key is not None else None
        own = spec is not None
        if spec is None:
            spec = self._global_fault
        if spec is not None and spec.remaining is not None:
            spec.remaining -= 1
            if spec.remaining <= 0:  # healed after this request
                if own:
                    del self._faults[key]  # type: ignore[arg-type]
                else:
                    self._global_fault = None
        return spec

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

    # ---- serving

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        query = request.query
        record = RecordedRequest(
            time=time.monotonic(),
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
        self._busy.add(request.protocol)
        try:
            return await self._respond(request, record)
        finally:
            self.in_flight -= 1
            self._busy.discard(request.protocol)

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

        spec = self._take_fault(record.rest_key)
        record.fault = spec.fault if spec is not None else None
        # The latency is the time from the request to the answer, the fake's own work included
        # (as a vendor's answer time would be): under load, the answer is not later for it.
        deadline = asyncio.get_running_loop().time() + self.latency

        if spec is not None:
            await _until(deadline)  # faults act after the latency
            early = await self._early_fault(request, record, spec)
            if early is not None:
                return early

        answer = self._answer(request.query, record.rest_key, encoded=spec is None)
        record.kind, record.window = answer.kind, answer.window
        status, content_type = answer.status, _JSON
        if spec is not None and spec.fault in _DATA_FAULTS and answer.kind == "success":
            record.kind = spec.fault.value
            rows = answer.payload["data"]
            if isinstance(rows, list):  # always: _answer built it
                _mangle(spec, answer.payload, rows)
            if spec.fault is Fault.OVERSIZE:
                # Top-level padding keeps the body valid JSON of the right shape, just too big.
                answer.payload["debug"] = "x" * spec.size
        body = answer.encoded()
        await _until(deadline)
        if spec is None or (spec.fault in _DATA_FAULTS and spec.fault is not Fault.OVERSIZE):
            return self._reply(record, status, body, content_type)

        record.kind = spec.fault.value
        fault = spec.fault
        if fault is Fault.TRUNCATED_JSON:
            body = body[: len(body) // 2]
        elif fault is Fault.WRONG_CONTENT_TYPE:
            content_type = "text/html"
        elif fault is Fault.INVALID_UTF8:
            marker = b'"source_name": "' if b'"source_name": "' in body else b'"status": "'
            body = body.replace(marker, marker + b"\xff\xfe", 1)
        elif fault is Fault.SLOW_BODY:
            return await self._trickle(request, record, status, body, spec)
        elif fault is Fault.RESET:
            response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            response.content_length = len(body)
            record.status = status
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            self._drop_connection(request)
            return response
        return self._reply(record, status, body, content_type)

    async def _early_fault(
        self, request: web.BaseRequest, record: RecordedRequest, spec: _FaultSpec
    ) -> web.StreamResponse | None:
        """The faults that answer without looking at the request (None: not one of them)."""
        fault = spec.fault
        record.kind = fault.value
        if fault is Fault.HANG:
            await self._released.wait()
            self._drop_connection(request)
            return web.Response()
        if fault is Fault.DISCONNECT:
            self._drop_connection(request)
            return web.Response()
        if fault is Fault.HTML_5XX:
            status = spec.status or 502
            return self._reply(record, status, _html_page(status).encode(), "text/html")
        if fault is Fault.RATE_LIMIT:
            headers = {}
            if spec.retry_after is not None:
                headers["Retry-After"] = self._retry_after(spec)
            status = spec.status or 429
            return self._reply(record, status, _as_bytes(_RATE_LIMITED), _JSON, headers)
        body = _VENDOR_ERRORS.get(fault)
        if body is not None:
            return self._reply(record, spec.status or self.error_status, _as_bytes(body), _JSON)
        return None

    def _retry_after(self, spec: _FaultSpec) -> str:
        value = spec.retry_after
        if isinstance(value, str):
            return value  # verbatim, e.g. garbage to prove the client ignores it
        if value is None:
            return ""
        if spec.retry_after_form == "http-date":
            return email.utils.formatdate(self._clock() + value, usegmt=True)
        return str(int(value)) if float(value).is_integer() else str(value)

    def _answer(
        self, query: Mapping[str, str], key: str | None, *, encoded: bool = False
    ) -> _Answer:
        """What the vendor would answer: the documented rules, in the order checked.

        ``encoded``: a success answer comes as ``body`` only (nothing will change its rows).
        """
        error_status = self.error_status
        account = self._accounts.get(key) if key else None
        if account is None:
            return _Answer("invalid_key", error_status, dict(_INVALID_KEY))
        if not account.state.served:
            return _Answer("account_inactive", error_status, dict(_ACCOUNT_INACTIVE))
        # Empty parameters count as absent, like the vendor's (Laravel) validator does.
        raw_from = query.get("date_from") or None
        raw_to = query.get("date_to") or None
        if raw_to is not None and raw_from is None:
            return _Answer(
                "validation_failed", error_status, json.loads(_as_bytes(_VALIDATION_FAILED))
            )
        if (raw_from is not None and not _UNIX_SECONDS.fullmatch(raw_from)) or (
            raw_to is not None and not _UNIX_SECONDS.fullmatch(raw_to)
        ):
            return _Answer("something_went_wrong", error_status, dict(_SOMETHING_WENT_WRONG))
        now = int(self._clock())
        date_to = int(raw_to) if raw_to is not None else now
        date_from = int(raw_from) if raw_from is not None else date_to - MAX_WINDOW_SECONDS
        window = (date_from, date_to)
        if date_to < date_from:
            return _Answer(
                "something_went_wrong", error_status, dict(_SOMETHING_WENT_WRONG), window
            )
        if date_to - date_from > MAX_WINDOW_SECONDS:
            return _Answer("interval_too_long", error_status, dict(_INTERVAL_TOO_LONG), window)
        pinned = self._pinned_rows.get(account.rest_key)
        if pinned is not None:
            rows = [dict(row) for row in pinned]
        elif encoded:
            return _Answer("success", 200, {}, window, success_body(account, date_from, date_to))
        else:
            rows = traffic_rows(account, date_from, date_to)
        return _Answer("success", 200, {"status": "success", "data": rows}, window)

    @staticmethod
    def _reply(
        record: RecordedRequest,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        record.status = status
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)

    async def _trickle(
        self,
        request: web.BaseRequest,
        record: RecordedRequest,
        status: int,
        body: bytes,
        spec: _FaultSpec,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": _JSON})
        response.content_length = len(body)
        record.status = status
        await response.prepare(request)
        chunks = [body[i : i + spec.chunk_size] for i in range(0, len(body), spec.chunk_size)]
        pause = spec.seconds / max(len(chunks) - 1, 1)
        for number, chunk in enumerate(chunks):
            if number:
                await asyncio.sleep(pause)
            await response.write(chunk)  # the first write also flushes the headers
        await response.write_eof()
        return response

    @staticmethod
    def _drop_connection(request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.close()


# --------------------------------------------------------------------------------------------
# The lean server (FakeApi(lean=True))

#: The HTTP servers the fake can run on (``python -m exporter.fakeapi --server``).
SERVERS: Final = ("lean", "aiohttp")
_TEXT: Final = "text/plain; charset=utf-8"
_SERVER: Final = "retargeting-fakeapi"
_MAX_URL: Final = 8190  # aiohttp's limit for the request line


@functools.lru_cache(maxsize=2)
def _http_date(second: int) -> str:
    """The Date header's value for a Unix second (asked once a response, made once a second)."""
    return email.utils.formatdate(second, usegmt=True)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _lean_response(
    status: int, body: bytes, content_type: str, *, head: bool, keep: bool, extra: str = ""
) -> bytes:
    """An HTTP/1.1 response: status line, headers and (unless HEAD) the body."""
    close = "" if keep else "Connection: close\r\n"
    header = (
        f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nDate: {_http_date(int(time.time()))}\r\n"
        f"Server: {_SERVER}\r\n{extra}{close}\r\n"
    )
    head_bytes = header.encode("latin-1")
    return head_bytes if head else head_bytes + body


class _LeanConnection(asyncio.Protocol):
    """One client connection of the lean server.

    HTTP/1.1 parsed by httptools. What it answers comes from :meth:`FakeApi._answer`, as on
    aiohttp's server: the same statuses, bodies and Content-Type, the latency counted from the
    request; GET and HEAD only (405, ``Allow: GET``), one path (404), and a malformed request
    gets 400 and the connection closed. Answers are written to the transport when due, in the
    order of the requests (pipelining), from one timer per connection: no task, no stream, no
    request object per request.
    """

    def __init__(self, fake: FakeApi) -> None:
        self._fake = fake
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        # (when due, response bytes, keep the connection, the request or None for a 400)
        self._due: deque[tuple[float, bytes, bool, RecordedRequest | None, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._done = False  # nothing more is read: the last answer closes the connection
        self._close_when_idle = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self._fake._lean_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fake._lean_connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fake.in_flight -= sum(1 for entry in self._due if entry[3] is not None)
        self._due.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered as usual; what follows is not HTTP
            self._done = True
            self.close_when_idle()
        except httptools.HttpParserError:
            if not self._done:
                self._done = True
                body = b"400: Bad Request"
                response = _lean_response(400, body, _TEXT, head=False, keep=False)
                self._queue(self._loop.time(), response, False, None, 400)

    def close_when_idle(self) -> None:
        """Close now if no answer is pending, else after the last one (stop_listening)."""
        if self._due:
            self._close_when_idle = True
        elif self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > _MAX_URL:
            raise ValueError("request line too long")

    def on_message_complete(self) -> None:
        if self._done:
            return
        fake, parser = self._fake, self._parser
        now = self._loop.time()
        method = parser.get_method().decode("ascii", "replace")
        keep = parser.should_keep_alive()
        url = httptools.parse_url(self._url)
        self._url = b""
        path = urllib.parse.unquote(url.path.decode("utf-8", "replace"))
        query: dict[str, str] = {}
        if url.query:
            for name, value in urllib.parse.parse_qsl(url.query.decode("utf-8", "replace"), True):
                query.setdefault(name, value)  # the first one wins, as in aiohttp's request.query
        rest_key = query.get("rest_key")
        record = RecordedRequest(
            time.monotonic(), method, path, rest_key, query.get("date_from"), query.get("date_to")
        )
        if fake._record:
            fake.requests.append(record)
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        extra = ""
        if path != ENDPOINT_PATH:
            record.kind, status, body, content_type = "not_found", 404, b"404: Not Found", _TEXT
            due = now
        elif method not in ("GET", "HEAD"):
            record.kind, status, content_type = "method_not_allowed", 405, _TEXT
            body, extra, due = b"405: Method Not Allowed", "Allow: GET\r\n", now
        else:
            answer = fake._answer(query, rest_key, encoded=True)
            record.kind, record.window = answer.kind, answer.window
            status, body, content_type = answer.status, answer.encoded(), _JSON
            due = now + fake.latency
        response = _lean_response(
            status, body, content_type, head=method == "HEAD", keep=keep, extra=extra
        )
        if not keep:
            self._done = True
        self._queue(due, response, keep, record, status)

    # answering

    def _queue(
        self, due: float, data: bytes, keep: bool, record: RecordedRequest | None, status: int
    ) -> None:
        self._due.append((due, data, keep, record, status))
        if self._timer is None:
            self._timer = self._loop.call_at(self._due[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        transport, due = self._transport, self._due
        if transport is None:
            return
        now = self._loop.time()
        while due and due[0][0] <= now:
            _, data, keep, record, status = due.popleft()
            if record is not None:
                self._fake.in_flight -= 1
                record.status = status
            transport.write(data)
            if not keep:
                transport.close()
                return
        if due:
            self._timer = self._loop.call_at(due[0][0], self._flush)
        elif self._close_when_idle:
            transport.close()


# --------------------------------------------------------------------------------------------
# Accounts for the demo and the benchmarks


def demo_accounts() -> list[FakeAccount]:
    """The accounts the ``--demo`` exporter config refers to by key.

    ``DEMO_REVOKED_KEY`` is deliberately absent, so it gets "Incorrect rest key!".
    """
    return [
        FakeAccount("demo-key-fashion", AccountState.PAID, seed=1),
        FakeAccount("demo-key-electronics", AccountState.PAID, seed=2),
        FakeAccount(
            "demo-key-garden",
            AccountState.PAYMENT_ERROR,
            seed=3,
            sources=(*DOCUMENTED_SOURCES, "SMS"),
        ),
        FakeAccount("demo-key-inactive", AccountState.INACTIVE, seed=4),
    ]


def generated_accounts(count: int) -> list[FakeAccount]:
    """``count`` paid accounts with keys ``key-00000``, ``key-00001``, ... and seed = index."""
    return [
        FakeAccount(f"key-{index:05d}", AccountState.PAID, seed=index) for index in range(count)
    ]


async def _serve(
    accounts: list[FakeAccount],
    host: str,
    port: int,
    latency: float,
    reuse_port: bool,
    lean: bool = True,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    fake = FakeApi(accounts, latency=latency, record_requests=False, lean=lean)  # nobody reads
    # A real vendor does not work out an account's figures afresh on its first request: fill
    # the per-account caches now, and freeze them, so that a benchmark's first cycle does not
    # measure the fake warming up (with 10,000 accounts that added 2 s to it).
    for account in accounts:
        traffic_rows(account, 0, _HOUR)
    gc.collect()
    gc.freeze()
    url = await fake.start(host, port, reuse_port=reuse_port)
    try:
        print(f"fake Retargeting API: {len(accounts)} accounts at {url}", flush=True)
        await stop.wait()
    finally:
        await fake.close()


def main(argv: list[str] | None = None) -> int:
    """Serve the demo accounts (or ``--accounts N`` generated ones) until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.fakeapi",
        description="A local stand-in for the Retargeting Traffic Source partners API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds from each request to its answer"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        metavar="N",
        help="serve N generated paid accounts (keys key-00000, ...) instead of the demo ones",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (SO_REUSEPORT; Linux), so that the fake is "
        "not what limits a benchmark; needs --port other than 0",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="lean",
        help="the HTTP server: lean (the default; under half the CPU per request) or aiohttp's "
        "(the one the tests' faults run on); both give the same answers",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and args.port == 0:
        parser.error("--workers needs a fixed --port")
    if args.accounts is not None and args.accounts < 1:
        parser.error("--accounts must be at least 1")
    accounts = demo_accounts() if args.accounts is None else generated_accounts(args.accounts)
    # The other workers: the same command, one process each, stopped with this one.
    workers = [
        subprocess.Popen([sys.executable, "-m", "exporter.fakeapi", *_worker_args(argv)])  # noqa: S603
        for _ in range(args.workers - 1)
    ]
    try:
        reuse = args.workers > 1 or args.reuse_port
        lean = args.server == "lean"
        eventloop.run(_serve(accounts, args.host, args.port, args.latency, reuse, lean))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"fakeapi: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
    return 0


def _worker_args(argv: list[str] | None) -> list[str]:
    """The command line of one more worker: this one's, as a single worker sharing the port."""
    given = list(sys.argv[1:] if argv is None else argv)
    return [*given, "--workers", "1", "--reuse-port"]


if __name__ == "__main__":
    raise SystemExit(main())
