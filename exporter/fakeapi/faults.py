"""Ways the fake can misbehave on demand, and what each one does to the vendor's answer.

A fault is set per key or for every request and heals after ``count`` requests
(:class:`FaultBook`). This module says what a fault makes of an answer: a whole answer of its
own (a proxy's error page, a rate limit, a vendor error), a spoiled body, or mangled rows. The
faults that act on the connection (hang, trickle, reset, disconnect) are the server's.
"""

from __future__ import annotations

import email.utils
import http
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from exporter.fakeapi.figures import COUNT_FIELDS
from exporter.fakeapi.vendor import (
    ACCOUNT_INACTIVE,
    INTERVAL_TOO_LONG,
    INVALID_KEY,
    JSON_TYPE,
    SOMETHING_WENT_WRONG,
    VALIDATION_FAILED,
    as_bytes,
)


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


_RATE_LIMITED: Final = {"status": "error", "message": "Too Many Attempts."}

_VENDOR_ERRORS: Final[Mapping[Fault, Mapping[str, object]]] = {
    Fault.INVALID_KEY: INVALID_KEY,
    Fault.ACCOUNT_INACTIVE: ACCOUNT_INACTIVE,
    Fault.INTERVAL_TOO_LONG: INTERVAL_TOO_LONG,
    Fault.VALIDATION_FAILED: VALIDATION_FAILED,
    Fault.SOMETHING_WENT_WRONG: SOMETHING_WENT_WRONG,
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

#: Faults that change the rows of a success answer (OVERSIZE pads it).
DATA_FAULTS: Final = frozenset(
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


@dataclass(slots=True)
class FaultSpec:
    """One fault as set, with its parameters and how many more requests it applies to."""

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


def _valid(name: str, value: object) -> bool:
    if name == "count":
        return value is None or (type(value) is int and value >= 1)
    if name in ("status", "chunk_size", "size"):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if name == "seconds":
        return isinstance(value, int | float) and value >= 0
    if name == "retry_after":
        return value is None or isinstance(value, int | float | str)
    if name == "retry_after_form":
        return value in ("seconds", "http-date")
    if name == "bare":
        return isinstance(value, bool)
    if name == "fields":
        return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)
    return True


def fault_spec(fault: Fault, params: Mapping[str, object]) -> FaultSpec:
    """Check the parameters of a fault now, so a typo fails the test that made it."""
    allowed = _FAULT_PARAMS.get(fault, frozenset()) | {"count"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"fault {fault.value} takes no parameter(s) {', '.join(unknown)}")
    spec = FaultSpec(Fault(fault))
    for name, value in params.items():
        if not _valid(name, value):
            raise ValueError(f"fault {fault.value}: invalid {name}={value!r}")
        if isinstance(value, list):  # fields: kept as a tuple, like the default
            value = tuple(value)
        setattr(spec, "remaining" if name == "count" else name, value)
    return spec


@dataclass(slots=True)
class FaultBook:
    """The faults set: per key, and one for every request; a key's own fault wins."""

    per_key: dict[str, FaultSpec] = field(default_factory=dict)
    every: FaultSpec | None = None

    def set(self, fault: Fault | None, key: str | None, params: Mapping[str, object]) -> None:
        """Set (or with ``fault=None`` clear) the fault of a key, or of every request."""
        if fault is None:
            if params:
                raise TypeError("clearing a fault takes no parameters")
            if key is None:
                self.every = None
            else:
                self.per_key.pop(key, None)
            return
        spec = fault_spec(Fault(fault), params)
        if key is None:
            self.every = spec
        else:
            self.per_key[key] = spec

    def clear(self) -> None:
        """Clear every fault, global and per key."""
        self.per_key.clear()
        self.every = None

    def take(self, key: str | None) -> FaultSpec | None:
        """The fault a request with ``key`` meets (None: none), counted against its ``count``."""
        spec = self.per_key.get(key) if key is not None else None
        own = spec is not None
        if spec is None:
            spec = self.every
        if spec is not None and spec.remaining is not None:
            spec.remaining -= 1
            if spec.remaining <= 0:  # healed after this request
                if own:
                    del self.per_key[key]  # type: ignore[arg-type]
                else:
                    self.every = None
        return spec


@dataclass(frozen=True, slots=True)
class Canned:
    """A whole answer a fault gives instead of the vendor's."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def _html_page(status: int) -> str:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def _retry_after(spec: FaultSpec, now: float) -> str | None:
    value = spec.retry_after
    if value is None:
        return None
    if isinstance(value, str):
        return value  # verbatim, e.g. garbage to prove the client ignores it
    if spec.retry_after_form == "http-date":
        return email.utils.formatdate(now + value, usegmt=True)
    return str(int(value)) if float(value).is_integer() else str(value)


def canned_answer(spec: FaultSpec, *, error_status: int, now: float) -> Canned | None:
    """The answer of a fault that does not look at the request (None: not such a fault).

    ``now`` is the vendor's clock (an HTTP-date Retry-After counts from it).
    """
    fault = spec.fault
    if fault is Fault.HTML_5XX:
        status = spec.status or 502
        return Canned(status, _html_page(status).encode(), "text/html")
    if fault is Fault.RATE_LIMIT:
        retry_after = _retry_after(spec, now)
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        return Canned(spec.status or 429, as_bytes(_RATE_LIMITED), JSON_TYPE, headers)
    body = _VENDOR_ERRORS.get(fault)
    if body is not None:
        return Canned(spec.status or error_status, as_bytes(body), JSON_TYPE)
    return None


def spoil(spec: FaultSpec, body: bytes, content_type: str) -> tuple[bytes, str]:
    """The body and Content-Type a body fault sends instead (others: unchanged)."""
    fault = spec.fault
    if fault is Fault.TRUNCATED_JSON:
        return body[: len(body) // 2], content_type
    if fault is Fault.WRONG_CONTENT_TYPE:
        return body, "text/html"
    if fault is Fault.INVALID_UTF8:
        marker = b'"source_name": "' if b'"source_name": "' in body else b'"status": "'
        return body.replace(marker, marker + b"\xff\xfe", 1), content_type
    return body, content_type


def _int_counts(rows: list[dict[str, object]], change: Callable[[int], object]) -> None:
    for row in rows:
        for name in COUNT_FIELDS:
            value = row.get(name)
            if isinstance(value, int):
                row[name] = change(value)


def mangle(spec: FaultSpec, payload: dict[str, object]) -> None:
    """Apply a data fault to a success payload, in place."""
    rows = payload["data"]
    if not isinstance(rows, list):  # never: the vendor's success payload has a list
        raise TypeError("a success payload's data is a list")
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
    elif fault is Fault.OVERSIZE:
        # Top-level padding keeps the body valid JSON of the right shape, just too big.
        payload["debug"] = "x" * spec.size
