"""What period a poll asks the API for: a rolling window or a calendar day, as integer bounds.

Rolling windows (``24h``, ``30d``) end at the poll time; calendar days (``today``,
``yesterday``) follow local midnight in an IANA time zone, across DST changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exporter.yamlcheck import parse_duration

MAX_WINDOW_SECONDS = 30 * 86400
MIN_WINDOW_SECONDS = 3600
DEFAULT_TIMEZONE = "UTC"
# Calendar-day windows: their length varies (23 h, 24 h or 25 h around DST changes).
CALENDAR_WINDOWS = ("today", "yesterday")


@dataclass(frozen=True)
class Window:
    """A time window ending at the poll time (shifted back by ``end_offset``).

    Either rolling (``24h``: the last ``seconds`` seconds) or a calendar day in ``timezone``
    (``today``: since local midnight; ``yesterday``: the last complete local day).
    """

    name: str
    seconds: int  # length of a rolling window; 0 for a calendar day
    timezone: str = DEFAULT_TIMEZONE  # IANA name; used by calendar days only
    # How often the window is asked for and how long its figures are shown, as configured
    # (None: the defaults of exporter.refresh, which depend on the account's interval).
    refresh: float | None = None
    stale_after: float | None = None

    @classmethod
    def parse(cls, text: str) -> Window:
        text = text.strip()
        if text in CALENDAR_WINDOWS:
            return cls(text, 0)
        try:
            seconds = parse_duration(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither a duration (such as 24h or 30d) nor today or yesterday"
            ) from None
        if seconds != int(seconds):
            raise ValueError(f"window {text!r} must be a whole number of seconds")
        if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"window {text} must be between 1h and 30d (the API's limit)")
        # The label is the window as written (24h stays 24h, 30d stays 30d): users' queries
        # and alert rules name it that way. Equal durations are rejected as duplicates.
        return cls(text, int(seconds))

    @property
    def calendar(self) -> bool:
        """A calendar day (``today``/``yesterday``) rather than a rolling duration."""
        return self.seconds == 0

    def same_as(self, other: Window) -> bool:
        """Both windows always ask for the same period (``24h`` and ``1d``; ``today`` twice)."""
        return self.name == other.name if self.calendar else self.seconds == other.seconds

    def bounds(self, now: float, end_offset: float) -> tuple[int, int]:
        """``(date_from, date_to)`` in integer Unix seconds, never more than 30 days apart."""
        date_to = int(now - end_offset)
        if not self.calendar:
            return date_to - self.seconds, date_to
        zone = ZoneInfo(self.timezone)
        day = datetime.fromtimestamp(date_to, zone).date()
        midnight = start_of_day(day, zone)
        if self.name == "today":
            return midnight, date_to
        return start_of_day(day - timedelta(days=1), zone), midnight


def start_of_day(day: date, zone: ZoneInfo) -> int:
    """Unix time of the first instant of ``day`` in ``zone``.

    ``fold=0`` picks the right instant when DST makes local midnight ambiguous (the first one)
    or skips it (the offset before the change maps 00:00 to the first existing time, 01:00).
    """
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp())


def with_timezone(windows: tuple[Window, ...], timezone: str) -> tuple[Window, ...]:
    """The windows, their calendar days set in ``timezone`` (rolling windows unchanged)."""
    return tuple(replace(w, timezone=timezone) if w.calendar else w for w in windows)
