"""What a poll produces, alone: the next snapshot from the previous one and the outcomes.

Pure functions, so plain values in and out: no fake API, no clock, no event loop. Also the
state change a poll makes (the log line it deserves) and the accounts a reload changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from exporter.config import AccountConfig, parse_config
from exporter.errors import ApiError, ApiErrorReason
from exporter.fetch import FetchResult, WindowOutcome
from exporter.poller import diff_accounts
from exporter.snapshot import cap_sources, initial_snapshot, next_snapshot, transition
from exporter.store import AccountSnapshot
from exporter.traffic import TrafficRow

R = ApiErrorReason
NOW = 1_700_000_000.0


def account(windows: tuple[str, ...] = ("24h", "30d"), **fields: Any) -> AccountConfig:
    data = {"windows": list(windows), "accounts": [{"name": "shop", "rest_key": "k"}]}
    return replace(parse_config(data).accounts[0], **fields)


def row(source: str, impressions: int = 10) -> TrafficRow:
    return TrafficRow(source, impressions, 2, 1, 9.5, 0.2, 0.5)


def answered(
    acct: AccountConfig, window: str, *rows: TrafficRow, failures: int = 0
) -> WindowOutcome:
    (config,) = [w for w in acct.windows if w.name == window]
    reasons = [R.TIMEOUT] * failures
    result = FetchResult(tuple(rows), None, failures + 1, reasons, NOW, NOW)
    return WindowOutcome(config, 100, 200, result)


def failed(acct: AccountConfig, window: str, *errors: ApiError) -> WindowOutcome:
    (config,) = [w for w in acct.windows if w.name == window]
    result = FetchResult(None, errors[-1], len(errors), [e.reason for e in errors], 0.0, NOW)
    return WindowOutcome(config, 100, 200, result)


def poll(
    acct: AccountConfig, previous: AccountSnapshot, *outcomes: WindowOutcome, at: float = NOW
) -> AccountSnapshot:
    return next_snapshot(acct, previous, outcomes, finished=at, duration=1.5, max_sources=5)


def test_a_first_success_fills_every_window_and_counts_each_attempt() -> None:
    acct = account()
    first = initial_snapshot(acct)
    assert not first.polled and not first.up and first.requests_total == 0
    snapshot = poll(
        acct, first, answered(acct, "24h", row("Newsletter")), answered(acct, "30d", failures=2)
    )
    assert snapshot.polled and snapshot.up and snapshot.active is True
    assert snapshot.last_success == NOW and snapshot.poll_duration == 1.5
    assert snapshot.requests_total == 4  # one, then a window that took three attempts
    assert {r: n for r, n in snapshot.errors_total.items() if n} == {R.TIMEOUT: 2}
    (figures,) = [f for f in snapshot.figures if f.window == "24h"]
    assert figures.rows == (row("Newsletter"),)
    assert (figures.fetched_at, figures.date_from, figures.date_to) == (NOW, 100, 200)
    assert snapshot.last_error is None and snapshot.last_error_message == ""


def test_a_failure_keeps_the_last_figures_and_reports_the_most_telling_error() -> None:
    acct = account()
    good = poll(
        acct, initial_snapshot(acct), answered(acct, "24h", row("SMS")), answered(acct, "30d")
    )
    timeout = ApiError(R.TIMEOUT, "no answer")
    bad_key = ApiError(R.INVALID_KEY, "Incorrect rest key!")
    later = NOW + 60
    snapshot = poll(
        acct, good, failed(acct, "24h", timeout, timeout), failed(acct, "30d", bad_key), at=later
    )
    assert snapshot.polled and not snapshot.up
    assert snapshot.last_error is R.INVALID_KEY  # permanent outranks transient
    assert snapshot.last_error_message == "Incorrect rest key!"
    assert snapshot.last_success == NOW  # the last success, not this poll
    assert snapshot.figures == good.figures
    assert snapshot.active is True  # nothing said the account is closed
    assert snapshot.requests_total == good.requests_total + 3
    assert snapshot.errors_total[R.TIMEOUT] == 2 and snapshot.errors_total[R.INVALID_KEY] == 1


def test_one_window_failing_is_down_but_the_other_windows_figures_are_new() -> None:
    acct = account()
    good = poll(acct, initial_snapshot(acct), answered(acct, "24h", row("SMS", 1)))
    snapshot = poll(
        acct,
        good,
        answered(acct, "24h", row("SMS", 2)),
        failed(acct, "30d", ApiError(R.HTTP_ERROR, "HTTP 502", status=502)),
        at=NOW + 60,
    )
    assert not snapshot.up and snapshot.last_error is R.HTTP_ERROR
    (figures,) = [f for f in snapshot.figures if f.window == "24h"]
    assert figures.rows[0].impressions == 2


def test_an_inactive_account_is_inactive_until_it_answers_again() -> None:
    acct = account(windows=("24h",))
    inactive = ApiError(R.ACCOUNT_INACTIVE, "Account is not active")
    closed = poll(acct, initial_snapshot(acct), failed(acct, "24h", inactive))
    assert closed.active is False and not closed.up
    still = poll(acct, closed, failed(acct, "24h", ApiError(R.TIMEOUT, "no answer")))
    assert still.active is False  # a timeout says nothing about the account
    reopened = poll(acct, still, answered(acct, "24h", row("SMS")))
    assert reopened.active is True and reopened.up


def test_the_snapshot_follows_the_accounts_configuration_in_force() -> None:
    acct = account()
    both = poll(acct, initial_snapshot(acct), answered(acct, "24h"), answered(acct, "30d"))
    fewer = account(windows=("24h",), labels={"team": "emea"}, interval=120.0)
    snapshot = poll(fewer, both, answered(fewer, "24h"))
    assert [f.window for f in snapshot.figures] == ["24h"]  # a removed window's figures go
    assert snapshot.windows == ("24h",) and snapshot.interval == 120.0
    assert snapshot.labels == {"team": "emea"}


def test_labels_and_error_counts_are_read_only() -> None:
    acct = account(labels={"team": "emea"})
    first = poll(acct, initial_snapshot(acct), answered(acct, "24h"), answered(acct, "30d"))
    assert first.labels == {"team": "emea"}
    with pytest.raises(TypeError):
        first.labels["team"] = "apac"  # type: ignore[index]
    with pytest.raises(TypeError):
        first.errors_total[R.TIMEOUT] = 5  # type: ignore[index]


def test_sources_over_the_cap_keep_the_documented_ones_first() -> None:
    rows = tuple(row(n) for n in ("Zeta", "SMS", "Pop-ups", "Newsletter", "Rec. Engine"))
    kept, dropped = cap_sources(rows, 3)
    assert [r.source_name for r in kept] == ["Newsletter", "Rec. Engine", "Pop-ups"]
    assert dropped == 2
    assert cap_sources(rows, 5) == (rows, 0)
    acct = account(windows=("24h",))
    snapshot = next_snapshot(
        acct,
        initial_snapshot(acct),
        [answered(acct, "24h", *rows)],
        finished=NOW,
        duration=0.1,
        max_sources=4,
    )
    assert snapshot.dropped_sources == 1


@pytest.mark.parametrize(
    ("before", "after", "line"),
    [
        ({}, {"up": True}, "account polled successfully"),
        ({}, {"up": False, "last_error": R.TIMEOUT}, "account down"),
        ({"up": True}, {"up": True}, None),
        ({"up": True}, {"up": False, "last_error": R.TIMEOUT}, "account down"),
        ({"up": False, "last_error": R.TIMEOUT}, {"up": False, "last_error": R.TIMEOUT}, None),
        (
            {"up": False, "last_error": R.TIMEOUT},
            {"up": False, "last_error": R.INVALID_KEY},
            "account failure reason changed",
        ),
        ({"up": False, "last_error": R.TIMEOUT}, {"up": True}, "account recovered"),
    ],
)
def test_each_state_change_has_its_line(
    before: dict[str, Any], after: dict[str, Any], line: str | None
) -> None:
    base = initial_snapshot(account())
    previous = replace(base, polled=bool(before), **before)
    assert transition(previous, replace(base, polled=True, **after)) == line


def test_a_reload_diff_names_added_removed_and_changed_accounts() -> None:
    a, b, c = (account(name=n) for n in "abc")
    old = {"a": a, "b": b}
    new = {"b": replace(b, interval=120.0), "c": c, "a": a}
    changes = diff_accounts(old, new)
    assert (changes.added, changes.removed, changes.changed) == (["c"], [], ["b"])
    assert diff_accounts(new, {"a": a}) == ([], ["b", "c"], [])
