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
    """One traffic source's figures for one window, as the vendor reported them."""

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
    if len(text) <= limit and text.isprintable():  # nothing to clean (every usual source name)
        return text.strip()
    head = text[: 4 * limit]  # what is cut off anyway need not be cleaned
    marked = "".join(c if c.isprintable() else "\x00" for c in head)
    cleaned = re.sub("\x00+", " ", marked).strip()
    more = len(cleaned) > limit or len(text) > len(head)
    return cleaned[:limit] + ("…" if more else "")


_WHOLE = re.compile(r"\d+(\.0+)?")
_DECIMAL = re.compile(r"\d+(\.\d+)?")


def _count(row: Mapping[str, Any], field: str) -> int:
    value = row.get(field)
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
    seen: set[str] = set()
    return tuple(_row(i, item, seen) for i, item in enumerate(data))


def _row(i: int, item: Any, seen: set[str]) -> TrafficRow:
    """Row ``i`` validated, every lenient form accepted; its name is added to ``seen``.

    Raises ``ValueError`` naming the row and the problem.
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
        return TrafficRow(
            source_name=name,
            impressions=_count(item, "impressions"),
            clicks=_count(item, "click"),
            orders=_count(item, "order"),
            revenue=_amount(item, "revenue", percent=False),
            ctr_ratio=_amount(item, "ctr", percent=True),
            cvr_ratio=_amount(item, "cvr", percent=True),
        )
    except ValueError as exc:
        raise ValueError(f"data[{i}] ({name}): {exc}") from None
