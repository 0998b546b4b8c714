"""Rendering: golden names and HELP texts; the cache never serves stale data."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import ApiErrorReason
from exporter.metrics import (
    METRIC_NAMES,
    RENDERS_PER_STEP,
    AccountsExposition,
    escape,
    number,
)
from exporter.selfmetrics import SelfMetrics
from exporter.store import AccountSnapshot, SnapshotStore, WindowFigures
from exporter.traffic import TrafficRow

GOLDEN = Path(__file__).parent / "golden" / "exposition.prom"
NOW = 1_800_000_000.0

ROWS = (
    TrafficRow("Newsletter", 339895, 4629, 16, 3849, 0.0136, 0.0035),
    TrafficRow("Pop-ups", 0, 0, 0, 0, 0.01, 0.0),
)


def healthy(name: str = "shop-a", **changes: object) -> AccountSnapshot:
    snapshot = AccountSnapshot(
        name=name,
        labels=MappingProxyType({"team": "emea"}),
        interval=300,
        stale_after=900,
        windows=("24h", "30d"),
        polled=True,
        up=True,
        active=True,
        figures=(
            WindowFigures("24h", ROWS, NOW - 10, 0, 0),
            WindowFigures("30d", ROWS[:1], NOW - 10, 0, 0),
        ),
        last_success=NOW - 10,
        poll_duration=0.25,
        requests_total=10,
        errors_total=MappingProxyType({ApiErrorReason.TIMEOUT: 1}),
    )
    return _replace(snapshot, **changes)


def _replace(snapshot: AccountSnapshot, **changes: object) -> AccountSnapshot:
    from dataclasses import replace

    return replace(snapshot, **changes)  # type: ignore[arg-type]


def golden_store() -> SnapshotStore:
    never = AccountSnapshot(
        name='odd "name"\\x',
        labels=MappingProxyType({}),
        interval=60,
        stale_after=180,
        windows=("24h",),
    )
    failing = healthy(
        "shop-b",
        up=False,
        active=False,
        last_error=ApiErrorReason.ACCOUNT_INACTIVE,
        last_error_message="Your account is not active!",
        figures=(),
    )
    return SnapshotStore([healthy(), failing, never])


def test_golden_exposition() -> None:
    text = AccountsExposition().render(golden_store(), NOW).decode()
    state = SelfMetrics(shard_index=1, shard_count=3)
    state.accounts.set(3)
    state.reload_success_timestamp.set(NOW)
    own = state.render().decode()
    own = "".join(
        line
        for line in own.splitlines(keepends=True)
        if "python_version" not in line and "process_" not in line
    )
    actual = text + own
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(actual)
    assert actual == GOLDEN.read_text(), "exposition changed: review, then UPDATE_GOLDEN=1"


def test_exposition_parses_and_uses_only_declared_names() -> None:
    body = AccountsExposition().render(golden_store(), NOW) + SelfMetrics().render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    declared = {n.removesuffix("_total") for n in METRIC_NAMES}
    ours = {n for n in families if n.startswith("retargeting_")}
    assert ours <= declared
    assert "process_cpu_seconds" in families
    errors = [s for s in families["retargeting_api_errors"].samples if s.name.endswith("_total")]
    # Every reason is exported for every account from the start, so increase() never misses.
    assert len(errors) == 3 * len(ApiErrorReason)


def test_series_of_an_account_never_polled() -> None:
    store = SnapshotStore([AccountSnapshot("new", MappingProxyType({}), 300, 900, ("24h",))])
    text = AccountsExposition().render(store, NOW).decode()
    assert 'retargeting_api_errors_total{account="new",reason="timeout"} 0' in text
    assert 'retargeting_poll_interval_seconds{account="new"} 300' in text
    assert "retargeting_up{" not in text  # unknown until the first poll
    assert "retargeting_account_active{" not in text


def test_figures_vanish_after_stale_after_and_up_drops_at_once() -> None:
    store = SnapshotStore([healthy()])
    exposition = AccountsExposition()
    assert "retargeting_clicks{" in exposition.render(store, NOW).decode()
    store.put(_replace(store.get("shop-a"), up=False))  # type: ignore[arg-type]
    text = exposition.render(store, NOW).decode()
    assert 'retargeting_up{account="shop-a"} 0' in text
    assert "retargeting_clicks{" in text  # still fresh: kept
    later = NOW - 10 + 900 + 1  # just past stale_after since the figures were fetched
    text = exposition.render(store, later).decode()
    assert "retargeting_clicks{" not in text and "# HELP retargeting_clicks" not in text
    assert 'retargeting_up{account="shop-a"} 0' in text


def test_the_cache_follows_every_change_of_the_store() -> None:
    store = SnapshotStore([healthy("a"), healthy("b")])
    exposition = AccountsExposition()
    first = exposition.render(store, NOW)
    assert exposition.render(store, NOW + 1) == first  # nothing changed
    store.put(healthy("b", requests_total=11))
    second = exposition.render(store, NOW + 2)
    assert b'retargeting_api_requests_total{account="b"} 11' in second
    assert b'retargeting_api_requests_total{account="a"} 10' in second
    store.remove("a")
    assert b'account="a"' not in exposition.render(store, NOW + 3)
    # Rendered afresh, the same store gives the same text as the cache does.
    assert AccountsExposition().render(store, NOW + 3) == exposition.render(store, NOW + 3)


@pytest.mark.parametrize(
    ("value", "text"),
    [(5, "5"), (5.0, "5"), (0.0136, "0.0136"), (1e20, "1e+20"), (1800000000.5, "1800000000.5")],
)
def test_number(value: float, text: str) -> None:
    assert number(value) == text


def test_escape() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_a_poll_stored_while_rendering_is_in_the_next_scrape() -> None:
    # Many changed accounts are rendered in steps (the web handler lets polls run between
    # them): a snapshot stored during a step must not be lost for the scrapes after it.
    store = SnapshotStore([healthy(f"shop-{i:03d}") for i in range(3 * RENDERS_PER_STEP)])
    exposition = AccountsExposition()
    steps = exposition.refresh(store, NOW)
    next(steps)
    store.put(healthy("shop-000", requests_total=11))
    for _ in steps:
        pass
    text = exposition.render(store, NOW)
    assert b'retargeting_api_requests_total{account="shop-000"} 11' in text
    assert text == AccountsExposition().render(store, NOW)


def test_chunks_come_one_family_at_a_time() -> None:
    store = SnapshotStore([healthy("a"), healthy("b")])
    exposition = AccountsExposition()
    exposition.render(store, NOW)
    chunks = list(exposition.chunks())
    headers = [c for c in chunks if c.startswith(b"# HELP ")]
    assert len(headers) == len(chunks) // 2  # a header, then that family's samples
    assert all(not c.startswith(b"#") and c.endswith(b"\n") for c in chunks[1::2])
