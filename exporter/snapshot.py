"""What a poll produces: the account's next snapshot, from the previous one and the outcomes.

Pure functions: no I/O, no clock, no logging; the poller stores and logs what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from exporter.config import AccountConfig
from exporter.errors import ApiError, ApiErrorReason
from exporter.fetch import WindowOutcome
from exporter.refresh import LastAnswer, stale_limit_of
from exporter.store import AccountSnapshot, WindowFigures
from exporter.traffic import TrafficRow

# The documented sources come first when the per-account cap forces a choice.
_DOCUMENTED = ("Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups")


def frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy: the snapshot must not change with the config's dict."""
    return MappingProxyType(dict(labels))


def stale_limits(account: AccountConfig) -> tuple[float, ...]:
    """Each window's stale limit, in window order (see ``exporter.refresh.stale_limit_of``)."""
    return tuple(stale_limit_of(w, account.interval, account.stale_after) for w in account.windows)


def initial_snapshot(account: AccountConfig) -> AccountSnapshot:
    """What the store holds for an account before its first poll."""
    return AccountSnapshot(
        name=account.name,
        labels=frozen(account.labels),
        interval=account.interval,
        stale_after=account.stale_after,
        windows=tuple(w.name for w in account.windows),
        currency=account.currency,
        stale_limits=stale_limits(account),
    )


def reconfigured(snapshot: AccountSnapshot, account: AccountConfig) -> AccountSnapshot:
    """The snapshot under an account's new labels, interval and windows (a reload)."""
    names = tuple(w.name for w in account.windows)
    return replace(
        snapshot,
        labels=frozen(account.labels),
        interval=account.interval,
        stale_after=account.stale_after,
        windows=names,
        currency=account.currency,
        stale_limits=stale_limits(account),
        failed_windows=tuple(w for w in snapshot.failed_windows if w in names),
    )


def last_answers(snapshot: AccountSnapshot) -> dict[str, LastAnswer]:
    """Each window's latest successful request, for ``exporter.refresh.due_windows``."""
    return {f.window: LastAnswer(f.fetched_at, f.date_from) for f in snapshot.figures}


def cap_sources(rows: tuple[TrafficRow, ...], cap: int) -> tuple[tuple[TrafficRow, ...], int]:
    """At most ``cap`` rows, documented sources first, then by name; and how many were dropped."""
    if len(rows) <= cap:
        return rows, 0
    ranked = sorted(
        rows,
        key=lambda r: (
            _DOCUMENTED.index(r.source_name) if r.source_name in _DOCUMENTED else len(_DOCUMENTED),
            r.source_name,
        ),
    )
    return tuple(ranked[:cap]), len(rows) - cap


def next_snapshot(
    account: AccountConfig,
    previous: AccountSnapshot,
    outcomes: Sequence[WindowOutcome],
    *,
    finished: float,
    duration: float,
    max_sources: int,
) -> AccountSnapshot:
    """The snapshot after a poll of ``account`` that ended at ``finished`` (wall clock).

    ``outcomes`` are of the windows the poll asked for (``exporter.refresh.due_windows``: a
    window that failed is always among them). Counters add up every attempt and failure; a
    window that failed keeps its last figures (they go stale later, in the exposition); the
    account is up only if the latest request of every window answered.
    """
    windows = {w.name for w in account.windows}
    figures = {f.window: f for f in previous.figures if f.window in windows}
    errors = previous.errors_total
    requests = previous.requests_total
    dropped = 0
    failed: list[ApiError] = []
    failed_windows: list[str] = []
    succeeded = False
    for outcome in outcomes:
        result = outcome.result
        requests += result.attempts
        if result.failures:
            counts = dict(errors)
            for reason in result.failures:
                counts[reason] = counts.get(reason, 0) + 1
            errors = MappingProxyType(counts)
        if result.rows is not None:
            succeeded = True
            rows, dropped_here = cap_sources(result.rows, max_sources)
            dropped = max(dropped, dropped_here)
            figures[outcome.window.name] = WindowFigures(
                outcome.window.name, rows, result.fetched_at, outcome.date_from, outcome.date_to
            )
        elif result.error is not None:
            failed.append(result.error)
            failed_windows.append(outcome.window.name)
    up = not failed
    active = previous.active
    if any(e.reason is ApiErrorReason.ACCOUNT_INACTIVE for e in failed):
        active = False
    elif succeeded:
        active = True
    # The most telling failure: a permanent one (key, inactive) outranks a passing one.
    main_error = next((e for e in failed if not e.transient), failed[-1] if failed else None)
    return replace(
        previous,
        labels=frozen(account.labels),
        interval=account.interval,
        stale_after=account.stale_after,
        windows=tuple(w.name for w in account.windows),
        stale_limits=stale_limits(account),
        polled=True,
        up=up,
        active=active,
        figures=tuple(figures.values()),
        last_success=finished if up else previous.last_success,
        poll_duration=duration,
        last_error=main_error.reason if main_error else None,
        last_error_message=main_error.message if main_error else "",
        requests_total=requests,
        errors_total=errors,
        dropped_sources=dropped if succeeded else previous.dropped_sources,
        failed_windows=tuple(failed_windows),
    )


def transition(previous: AccountSnapshot, current: AccountSnapshot) -> str | None:
    """The state change a poll made, as the log line that reports it, or None.

    "account polled successfully" is a first success; "account recovered" follows a failure.
    """
    if current.up and (not previous.polled or not previous.up):
        return "account recovered" if previous.polled else "account polled successfully"
    if not current.up and (not previous.polled or previous.up):
        return "account down"
    if not current.up and previous.last_error != current.last_error:
        return "account failure reason changed"
    return None
