"""The vendor's documented rules: which answer a request gets, and the documented bodies.

What the API answers for a key, its account's state and the window asked for, checked in the
vendor's order (see ``retargeting-api.md``): the same success and error bodies, byte for byte,
and the 30-day rule. No I/O: the server sends what :func:`answer` decides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from exporter.fakeapi.accounts import FakeAccount
from exporter.fakeapi.figures import success_body, traffic_rows

ENDPOINT_PATH = "/v1/partners-api/traffic-source"
MAX_WINDOW_SECONDS = 30 * 86400
JSON_TYPE: Final = "application/json"

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


INVALID_KEY: Final = {"status": "error", "message": "Incorrect rest key!"}
ACCOUNT_INACTIVE: Final = {"status": "error", "message": "Your account is not active!"}
INTERVAL_TOO_LONG: Final = {"status": "error", "message": "Interval is greater than 30 days"}
SOMETHING_WENT_WRONG: Final = {"status": "error", "message": "Something went wrong"}
VALIDATION_FAILED: Final = {
    "status": "fail",
    "data": {
        "validator": {"date_from": ["The date from field is required when date to is present."]}
    },
}

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")

#: Pinned rows: served for a key whatever the window (FakeApi.set_rows).
PinnedRows = tuple[dict[str, object], ...]


def as_bytes(payload: Mapping[str, object]) -> bytes:
    """A body as the vendor writes it."""
    # json.dumps' default separators: the documented error bodies come out byte-identical.
    return json.dumps(payload).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """What the vendor answers to one request, before any fault changes it."""

    kind: str  # "success" or the vendor error's name ("invalid_key", ...)
    status: int
    payload: dict[str, object]
    window: tuple[int, int] | None = None  # the (date_from, date_to) the answer is for
    body: bytes | None = None  # already encoded (then ``payload`` is empty)

    def encoded(self) -> bytes:
        """The body to send."""
        return self.body if self.body is not None else as_bytes(self.payload)


def answer(
    account: FakeAccount | None,
    query: Mapping[str, str],
    *,
    pinned: PinnedRows | None = None,
    error_status: int = 200,
    now: float,
    encoded: bool = False,
) -> Answer:
    """What the vendor would answer: the documented rules, in the order checked.

    ``account`` is the one the request's key names (None: no such key); ``now`` is the
    vendor's clock, where a window without ``date_to`` ends; vendor errors come with
    ``error_status`` (the real one is undocumented). ``encoded``: a success answer comes as
    ``body`` only (for a caller that will not change its rows).
    """
    if account is None:
        return Answer("invalid_key", error_status, dict(INVALID_KEY))
    if not account.state.served:
        return Answer("account_inactive", error_status, dict(ACCOUNT_INACTIVE))
    # Empty parameters count as absent, like the vendor's (Laravel) validator does.
    raw_from = query.get("date_from") or None
    raw_to = query.get("date_to") or None
    if raw_to is not None and raw_from is None:
        return Answer("validation_failed", error_status, json.loads(as_bytes(VALIDATION_FAILED)))
    if (raw_from is not None and not _UNIX_SECONDS.fullmatch(raw_from)) or (
        raw_to is not None and not _UNIX_SECONDS.fullmatch(raw_to)
    ):
        return Answer("something_went_wrong", error_status, dict(SOMETHING_WENT_WRONG))
    date_to = int(raw_to) if raw_to is not None else int(now)
    date_from = int(raw_from) if raw_from is not None else date_to - MAX_WINDOW_SECONDS
    window = (date_from, date_to)
    if date_to < date_from:
        return Answer("something_went_wrong", error_status, dict(SOMETHING_WENT_WRONG), window)
    if date_to - date_from > MAX_WINDOW_SECONDS:
        return Answer("interval_too_long", error_status, dict(INTERVAL_TOO_LONG), window)
    if pinned is not None:
        rows = [dict(row) for row in pinned]
    elif encoded:
        return Answer("success", 200, {}, window, success_body(account, date_from, date_to))
    else:
        rows = traffic_rows(account, date_from, date_to)
    return Answer("success", 200, {"status": "success", "data": rows}, window)
