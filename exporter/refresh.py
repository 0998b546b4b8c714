"""How often each window is asked for: its refresh, which windows a poll asks, and the cost.

Pure functions on values the caller passes in (the time comes from the poller's injected clock):
no I/O, no clock, no logging. A window is asked for when it has never answered, when its latest
request failed, when its calendar day has changed, or when its last success is older than its
``refresh`` less half a polling interval: so ``refresh`` counts in whole polls, rounded to the
nearest (``refresh: 1h`` at a 5-minute interval is every 12th poll, not every 13th).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from exporter.window import Window

# ``yesterday`` only settles once its day has closed: asked hourly unless configured otherwise.
YESTERDAY_REFRESH = 3600.0
DAY = 86400.0


def refresh_of(window: Window, interval: float) -> float:
    """Seconds between requests for ``window`` on an account polled every ``interval``.

    The configured ``refresh``, or by default the interval (``yesterday``: 1h); never below the
    interval, as a window cannot be asked for more often than the account is polled.
    """
    if window.refresh is not None:
        return max(window.refresh, interval)
    if window.name == "yesterday":
        return max(YESTERDAY_REFRESH, interval)
    return interval


def stale_limit_of(window: Window, interval: float, stale_after: float) -> float:
    """How long after its last success the window's figures are still exported.

    The window's own ``stale_after``, or the account's margin past the window's next refresh:
    ``stale_after`` allows ``stale_after - interval`` of failed polls after the next is due, and
    a window refreshed every ``refresh`` gets the same margin after its next refresh.
    """
    if window.stale_after is not None:
        return window.stale_after
    return stale_after + refresh_of(window, interval) - interval


def polls_per_refresh(refresh: float, interval: float) -> int:
    """Every how many polls a window refreshed every ``refresh`` is asked for (at least 1)."""
    return max(1, math.ceil(refresh / interval - 0.5))


class LastAnswer(NamedTuple):
    """What a window's latest successful request was: when it answered and its start bound."""

    fetched_at: float  # wall-clock time of the answer
    date_from: int


def window_due(
    window: Window,
    *,
    interval: float,
    last: LastAnswer | None,
    failed: bool,
    now: float,
    end_offset: float,
) -> bool:
    """Whether a poll starting at ``now`` (wall clock) asks for ``window``."""
    if last is None or failed:
        return True
    refresh = refresh_of(window, interval)
    if refresh <= interval:
        return True
    if window.calendar and window.bounds(now, end_offset)[0] != last.date_from:
        return True  # a new day: the figures shown are of the day before
    return now - last.fetched_at >= refresh - interval / 2


def due_windows(
    windows: Iterable[Window],
    *,
    interval: float,
    last: Mapping[str, LastAnswer],
    failed: Iterable[str],
    now: float,
    end_offset: float,
) -> tuple[Window, ...]:
    """The windows a poll starting at ``now`` asks for, in the order given."""
    failed = set(failed)
    return tuple(
        w
        for w in windows
        if window_due(
            w,
            interval=interval,
            last=last.get(w.name),
            failed=w.name in failed,
            now=now,
            end_offset=end_offset,
        )
    )


def window_requests_per_day(window: Window, interval: float) -> float:
    """Requests a day for one window when every request succeeds (retries not counted).

    A calendar day refreshed less often than every poll starts again after local midnight, so
    its day holds a whole number of refreshes.
    """
    polls = polls_per_refresh(refresh_of(window, interval), interval)
    per_day = DAY / (interval * polls)
    return float(math.ceil(per_day)) if window.calendar and polls > 1 else per_day


def requests_per_day(windows: Iterable[Window], interval: float) -> float:
    """Requests a day for an account with these windows polled every ``interval``."""
    return sum(window_requests_per_day(w, interval) for w in windows)
