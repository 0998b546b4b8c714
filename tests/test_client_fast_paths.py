"""The response parser's fast paths (issue 6) answer exactly what the general paths answer."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.client import MAX_COUNT, _amount, _count, _safe_text


def general_safe_text(text: str, limit: int) -> str:
    """_safe_text without its fast path."""
    head = text[: 4 * limit]
    marked = "".join(c if c.isprintable() else "\x00" for c in head)
    cleaned = re.sub("\x00+", " ", marked).strip()
    more = len(cleaned) > limit or len(text) > len(head)
    return cleaned[:limit] + ("…" if more else "")


@given(text=st.text(max_size=40), limit=st.integers(1, 30))
@example(text=" Newsletter ", limit=20)
@example(text="a\u009bb", limit=5)
def test_safe_text(text: str, limit: int) -> None:
    assert _safe_text(text, limit) == general_safe_text(text, limit)


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
