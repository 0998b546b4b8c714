"""The vendor's traffic rows: ``TrafficRow`` and the validation of a success body's ``data``.

Figures are untrusted: every row is checked (whole counts in range, decimals that are numbers,
printable source names, no source twice) and a row that fails says which field and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

# Counts beyond this are not plausible traffic figures and would lose precision as floats.
MAX_COUNT = 10**15
MAX_SOURCE_NAME = 100


class TrafficRow(NamedTuple):
    """One traffic source's figures for one window, as the vendor reported them.

    A named tuple rather than a dataclass: cheaper to build, and once the garbage collector has
    seen one it stops tracking it (a tuple of numbers and a string cannot be part of a cycle),
    so the rows of every account's snapshot are never walked again by later collections.
    """

    source_name: str
    impressions: int
    clicks: int
    orders: int
    revenue: float
    ctr_ratio: float
    cvr_ratio: float


def safe_text(text: str, limit: int = 200) -> str:
    """Printable, single-line, bounded text (vendor messages are untrusted).

    Every non-printable character counts, not only ASCII controls: C1 controls such as U+009B
    (CSI) are terminal escapes too, and line or paragraph separators would split a log line.
    """
    if len(text) <= limit and text.isprintable():  # the usual case (every source name): clean
        return text.strip()
    head = text[: 4 * limit]  # what is cut off anyway need not be cleaned
    marked = "".join(c if c.isprintable() else "\x00" for c in head)
    cleaned = re.sub("\x00+", " ", marked).strip()
    more = len(cleaned) > limit or len(text) > len(head)
    return cleaned[:limit] + ("…" if more else "")


_WHOLE = re.compile(r"\d+(\.0+)?")
_DECIMAL = re.compile(r"\d+(\.\d+)?")
_PLAIN = re.compile(r"\d{1,15}(\.\d+)?")  # below MAX_COUNT: needs no range check


def _count(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the usual answer: nothing to check
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(
            f"field {field!r} is missing" if value is None else f"{field!r} is boolean"
        )
    if isinstance(value, str):
        text = value.strip()
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"field {field!r} is not a whole number: {safe_text(text, 20)!r}")
        value = int(text.split(".")[0])
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"field {field!r} is not a whole number: {value!r}")
        value = int(value)
    elif not isinstance(value, int):
        raise ValueError(f"field {field!r} is not a number")
    if value < 0 or value > MAX_COUNT:
        raise ValueError(f"field {field!r} is out of range: {value}")
    return value


def _amount(row: Mapping[str, Any], field: str, *, percent: bool) -> float:
    value = row.get(field)
    if type(value) is int and 0 <= value <= MAX_COUNT:  # revenue, usually
        return _shifted(str(value), percent) if percent else float(value)
    if type(value) is str and _PLAIN.fullmatch(value):  # "1.36" (ctr, cvr): in range, no sign
        return _shifted(value, percent)
    if isinstance(value, bool) or value is None:
        raise ValueError(
            f"field {field!r} is missing" if value is None else f"{field!r} is boolean"
        )
    if isinstance(value, str):
        text = value.strip().rstrip("%") if percent else value.strip()
        if not _DECIMAL.fullmatch(text):
            raise ValueError(f"field {field!r} is not a number: {safe_text(text, 20)!r}")
        if (number := float(text)) > MAX_COUNT:
            raise ValueError(f"field {field!r} is out of range: {number}")
        return _shifted(text, percent)
    if isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"field {field!r} is not a number")
    if not math.isfinite(number) or number < 0 or number > MAX_COUNT:
        raise ValueError(f"field {field!r} is out of range: {number}")
    return _shifted(repr(number), percent)


def _shifted(decimal: str, percent: bool) -> float:
    """The float nearest to the decimal text, divided by 100 if ``percent``.

    "1.36" % → 0.0136 exactly (float division would give 0.013600000000000001): the decimal
    exponent is shifted in the text, so ``float`` rounds the exact decimal value once.
    """
    if not percent:
        return float(decimal)
    if "e" not in decimal:
        return float(decimal + "e-2")
    mantissa, _, exponent = decimal.partition("e")
    return float(f"{mantissa}e{int(exponent or 0) - 2}")


def parse_rows(data: Any) -> tuple[TrafficRow, ...]:
    """Validate the ``data`` list of a success body. Raises ``ValueError`` on any bad shape."""
    if not isinstance(data, list):
        raise ValueError("data is not a list")
    rows: list[TrafficRow] = []
    seen: set[str] = set()
    plain = _PLAIN.fullmatch
    for i, item in enumerate(data):
        # The usual row, checked inline (the poller parses every answer this way): a clean
        # name, whole counts in range, revenue a whole number and ctr/cvr plain decimal text.
        # Anything else takes the general path, checked_row, which accepts or rejects it.
        if type(item) is dict:
            name = item.get("source_name")
            impressions, clicks = item.get("impressions"), item.get("click")
            orders, revenue = item.get("order"), item.get("revenue")
            ctr, cvr = item.get("ctr"), item.get("cvr")
            if (
                type(name) is str
                and len(name) <= MAX_SOURCE_NAME
                and name.isprintable()
                and (name := name.strip())
                and name not in seen
                and type(impressions) is int
                and 0 <= impressions <= MAX_COUNT
                and type(clicks) is int
                and 0 <= clicks <= MAX_COUNT
                and type(orders) is int
                and 0 <= orders <= MAX_COUNT
                and type(revenue) is int
                and 0 <= revenue <= MAX_COUNT
                and type(ctr) is str
                and plain(ctr)
                and type(cvr) is str
                and plain(cvr)
            ):
                seen.add(name)
                rows.append(
                    TrafficRow(
                        name,
                        impressions,
                        clicks,
                        orders,
                        float(revenue),
                        float(ctr + "e-2"),  # as _shifted: the exact decimal, rounded once
                        float(cvr + "e-2"),
                    )
                )
                continue
        rows.append(checked_row(i, item, seen))
    return tuple(rows)


def checked_row(i: int, item: Any, seen: set[str]) -> TrafficRow:
    """Row ``i`` validated in full, every lenient form accepted (``parse_rows``' general path).

    Adds the row's name to ``seen``; raises ``ValueError`` naming the row and the problem.
    """
    if not isinstance(item, dict):
        raise ValueError(f"data[{i}] is not an object")
    name = item.get("source_name")
    name = safe_text(name, MAX_SOURCE_NAME) if isinstance(name, str) else ""
    if not name:  # absent, or nothing printable in it
        raise ValueError(f"data[{i}].source_name is missing or empty")
    if name in seen:
        raise ValueError(f"source_name {name!r} appears twice")
    seen.add(name)
    try:
        return TrafficRow(  # positional: half the cost of keywords, in field order
            name,
            _count(item, "impressions"),
            _count(item, "click"),
            _count(item, "order"),
            _amount(item, "revenue", percent=False),
            _amount(item, "ctr", percent=True),
            _amount(item, "cvr", percent=True),
        )
    except ValueError as exc:
        raise ValueError(f"data[{i}] ({name}): {exc}") from None
