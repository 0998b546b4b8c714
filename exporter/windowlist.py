"""The ``windows`` lists of the configuration: plain names or ``{window, refresh, stale_after}``.

Each entry becomes a ``Window``; ``check_refreshes`` then checks every refresh against the
interval and stale limit of the account that polls it, reporting each problem with its path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from exporter.refresh import refresh_of, stale_limit_of
from exporter.window import Window
from exporter.yamlcheck import Problems, duration, format_duration, kind, mapping

MIN_REFRESH_SECONDS = 30.0  # the shortest polling interval

_WINDOW_KEYS = {"window", "refresh", "stale_after"}
_WINDOW_FORMS = "a duration such as 24h or 30d, today, yesterday, or {window: 30d, refresh: 1h}"


def parse_windows(value: Any, path: str, problems: Problems) -> tuple[Window, ...] | None:
    """A ``windows`` list at ``path``: its windows, or None if it is not a non-empty list."""
    if not isinstance(value, list) or not value:
        problems.add(path, "must be a non-empty list of durations such as [24h, 30d]")
        return None
    windows: list[Window] = []
    for i, item in enumerate(value):
        window = _window(item, f"{path}[{i}]", problems)
        if window is None:
            continue
        if any(w.same_as(window) for w in windows):
            problems.add(f"{path}[{i}]", f"window {window.name} is listed twice")
            continue
        windows.append(window)
    return tuple(windows)


def _window(item: Any, path: str, problems: Problems) -> Window | None:
    """One entry of a windows list: ``30d``, or ``{window: 30d, refresh: 1h, stale_after: 3h}``."""
    raw: dict[str, Any] = {"window": item}
    where = path
    if isinstance(item, dict):
        raw = mapping(item, path, problems, _WINDOW_KEYS)
        where = f"{path}.window"
        if "window" not in raw:
            problems.add(path, f"needs window: {_WINDOW_FORMS}")
            return None
    if isinstance(raw["window"], dict | list) or raw["window"] is None:
        problems.add(where, f"must be {_WINDOW_FORMS}, got {kind(raw['window'])}")
        return None
    try:
        window = Window.parse(str(raw["window"]))
    except ValueError as exc:
        problems.add(where, str(exc))
        return None
    refresh = stale = None
    if "refresh" in raw:
        refresh = duration(raw, "refresh", path, problems, 0.0, MIN_REFRESH_SECONDS)
    if "stale_after" in raw:
        stale = duration(raw, "stale_after", path, problems, 0.0, MIN_REFRESH_SECONDS)
    return replace(window, refresh=refresh or None, stale_after=stale or None)


def check_refreshes(
    windows: tuple[Window, ...],
    path: str,
    interval: float,
    stale_after: float,
    problems: Problems,
    account: str = "",
) -> None:
    """A window is asked for at most once per poll, and never shown stale between refreshes.

    ``path`` is the windows list the entries come from; ``account`` names an account whose own
    interval the list (the top-level one) is checked against.
    """
    of_account = f" of account {account}" if account else ""
    for i, window in enumerate(windows):
        refresh = window.refresh if window.refresh is not None else interval
        if refresh < interval:
            problems.add(
                f"{path}[{i}].refresh",
                f"refresh {format_duration(refresh)} of window {window.name} is below the "
                f"polling interval {format_duration(interval)}{of_account}: a window is asked "
                "for at most once per poll",
            )
            continue
        limit = stale_limit_of(window, interval, stale_after)
        if limit < refresh_of(window, interval):
            problems.add(
                f"{path}[{i}].stale_after",
                f"refresh {format_duration(refresh_of(window, interval))} of window "
                f"{window.name} is above its stale_after {format_duration(limit)}{of_account}: "
                "its figures would go stale between refreshes",
            )
