"""The fake vendor's figures: a deterministic function of (seed, source, date_from, date_to).

A test or the backfill can compute the answer to any window without asking the fake, and a
window of any length costs a few prefix-sum lookups per source (the fake answers every
benchmark request from here).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from exporter.fakeapi.accounts import FakeAccount

#: The integer fields of a row, in the vendor's order.
COUNT_FIELDS: Final = ("impressions", "click", "order", "revenue")

# Every metric is the integral over the window of an hourly rate
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
        phase + 168 * int(_unit(seed, source, metric) * weeks) for metric in COUNT_FIELDS
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

    The same bytes (tests/test_fakeapi.py checks), at a fraction of the cost: in a benchmark
    the fake answers every request of a cycle on the machine the exporter is measured on.
    """
    parts = [
        f'{{"impressions": {i}, "click": {c}, "order": {o}, "revenue": {r}, '
        f'"source_name": {_json_string(name)}, "cvr": "{cvr}", "ctr": "{ctr}"}}'
        for i, c, o, r, name, cvr, ctr in _rows(account, date_from, date_to)
    ]
    return f'{{"status": "success", "data": [{", ".join(parts)}]}}'.encode()
