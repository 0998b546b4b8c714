"""The response parser's fast paths (issue 6) answer exactly what the general paths answer."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.traffic import MAX_COUNT, _amount, _count, checked_row, parse_rows, safe_text


def general_safe_text(text: str, limit: int) -> str:
    """safe_text without its fast path."""
    head = text[: 4 * limit]
    marked = "".join(c if c.isprintable() else "\x00" for c in head)
    cleaned = re.sub("\x00+", " ", marked).strip()
    more = len(cleaned) > limit or len(text) > len(head)
    return cleaned[:limit] + ("…" if more else "")


@given(text=st.text(max_size=40), limit=st.integers(1, 30))
@example(text=" Newsletter ", limit=20)
@example(text="a\u009bb", limit=5)
def test_safe_text(text: str, limit: int) -> None:
    assert safe_text(text, limit) == general_safe_text(text, limit)


@given(value=st.floats(min_value=0, max_value=MAX_COUNT, allow_nan=False) | st.integers(0, 10**6))
@example(value=1.36)
@example(value=1e-05)
@example(value=100)
def test_percent_number_is_the_exact_decimal_shift(value: float) -> None:
    expected = float(Decimal(repr(float(value))).scaleb(-2))
    assert _amount({"ctr": value}, "ctr", percent=True) == expected


@given(whole=st.integers(0, 10**6), fraction=st.text("0123456789", min_size=1, max_size=12))
@example(whole=1, fraction="36")
@example(whole=0, fraction="35")
def test_percent_text_is_the_exact_decimal_shift(whole: int, fraction: str) -> None:
    text = f"{whole}.{fraction}"
    expected = float(Decimal(text).scaleb(-2))  # rounded once, from the text's exact value
    assert _amount({"ctr": text}, "ctr", percent=True) == expected
    assert _amount({"ctr": text + "%"}, "ctr", percent=True) == expected


@given(value=st.integers(-(10**16), 10**16))
def test_whole_numbers(value: int) -> None:
    if 0 <= value <= MAX_COUNT:
        assert _count({"click": value}, "click") == value
        assert _amount({"revenue": value}, "revenue", percent=False) == float(value)
    else:
        with pytest.raises(ValueError, match="out of range"):
            _count({"click": value}, "click")
        with pytest.raises(ValueError, match="out of range"):
            _amount({"revenue": value}, "revenue", percent=False)


def test_booleans_are_still_refused() -> None:
    with pytest.raises(ValueError, match="boolean"):
        _count({"click": True}, "click")
    with pytest.raises(ValueError, match="boolean"):
        _amount({"revenue": False}, "revenue", percent=False)


def _outcome(parse: Callable[[list[object]], object], rows: list[object]) -> object:
    try:
        return parse(rows)
    except ValueError as exc:
        return f"ValueError: {exc}"


def test_inline_row_path_agrees_with_the_general_one() -> None:
    """parse_rows checks the usual row inline: it must accept, reject and round exactly as
    checked_row (the general path) does, on usual rows and on every edge around them."""
    rng = random.Random(20261124)
    names = [
        "Newsletter",
        " Pop-ups ",
        "x" * 100,
        "x" * 101,
        "",
        "  ",
        "Ünïcödé",
        "a\tb",
        "a\u009bb",
    ]
    counts: list[object] = [0, 1, 12345, MAX_COUNT, MAX_COUNT + 1, -1, True, 1.0, "7", None]
    decimals: list[object] = ["0.00", "1.36", "100.00", "7", "0.1", "999999999999999.99"]
    decimals += ["1e3", "-1.00", " 1.00", "1.", "", 1, 1.5, None, "\u0661.\u0663"]
    checked = 0
    for _ in range(4000):
        row: dict[str, object] = {
            "impressions": rng.choice(counts[:4]) if rng.random() < 0.8 else rng.choice(counts),
            "click": rng.choice(counts[:4]) if rng.random() < 0.8 else rng.choice(counts),
            "order": rng.choice(counts[:4]) if rng.random() < 0.8 else rng.choice(counts),
            "revenue": rng.choice(counts[:4]) if rng.random() < 0.8 else rng.choice(decimals),
            "source_name": rng.choice(names),
            "cvr": rng.choice(decimals[:6]) if rng.random() < 0.8 else rng.choice(decimals),
            "ctr": rng.choice(decimals[:6]) if rng.random() < 0.8 else rng.choice(decimals),
        }
        if rng.random() < 0.05:
            del row[rng.choice(list(row))]
        fast = _outcome(parse_rows, [row])
        general = _outcome(lambda rows: (checked_row(0, rows[0], set()),), [row])
        assert fast == general, row
        assert repr(fast) == repr(general), row  # the same floats, bit for bit
        checked += isinstance(fast, tuple)
    assert checked > 1000  # most rows were valid: the inline path really ran
    usual = {"impressions": 9, "click": 2, "order": 1, "revenue": 5, "cvr": "1.00", "ctr": "2.22"}
    twice = [{**usual, "source_name": name} for name in ("Newsletter", " Newsletter")]
    expected = "ValueError: source_name 'Newsletter' appears twice"
    assert _outcome(parse_rows, twice) == expected
