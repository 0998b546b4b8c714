"""Calendar-day windows: ``today`` and ``yesterday`` in a configured IANA time zone.

Day boundaries must follow the zone's own midnight, DST included (23 h and 25 h days), on both
sides of UTC; the label stays ``today`` / ``yesterday``; config errors name their path.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from conftest import Clients
from tooling import REPO

from exporter.clock import SystemClock
from exporter.config import parse_config
from exporter.fakeapi import FakeAccount, FakeApi
from exporter.metrics import render_account
from exporter.poller import Poller
from exporter.store import SnapshotStore
from exporter.window import Window
from exporter.yamlcheck import ConfigError

ENV = {"SHOP_A_KEY": "key-a", "SHOP_B_KEY": "key-b"}


def config_with(**top: object) -> dict[str, object]:
    data: dict[str, object] = {"accounts": [{"name": "shop-a", "rest_key_env": "SHOP_A_KEY"}]}
    data.update(top)
    return data


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cfg.yaml", env=ENV)
    return info.value.problems


def at(text: str) -> float:
    """An RFC 3339 instant as Unix seconds."""
    return datetime.fromisoformat(text).timestamp()


def local(ts: int, zone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).isoformat()


def day(name: str, zone: str) -> Window:
    window = Window.parse(name)
    return Window(window.name, window.seconds, zone)


# --- configuration ------------------------------------------------------------------------------


def test_calendar_windows_take_the_global_or_the_account_timezone() -> None:
    config = parse_config(
        config_with(
            windows=["24h", "today", "yesterday"],
            timezone="Europe/Bucharest",
            accounts=[
                {"name": "shop-a", "rest_key_env": "SHOP_A_KEY"},
                {"name": "shop-b", "rest_key_env": "SHOP_B_KEY", "timezone": "Pacific/Auckland"},
            ],
        ),
        env=ENV,
    )
    a, b = config.accounts
    assert [w.name for w in a.windows] == ["24h", "today", "yesterday"]
    assert [w.timezone for w in a.windows[1:]] == ["Europe/Bucharest"] * 2
    assert [w.timezone for w in b.windows[1:]] == ["Pacific/Auckland"] * 2
    assert (a.timezone, b.timezone, config.timezone) == (
        "Europe/Bucharest",
        "Pacific/Auckland",
        "Europe/Bucharest",
    )
    # Rolling windows are untouched by the zone: 24h is the last 86400 s everywhere.
    assert a.windows[0] == b.windows[0] == Window("24h", 86400)


def test_timezone_defaults_to_utc() -> None:
    config = parse_config(config_with(windows=["today"]), env=ENV)
    assert config.accounts[0].windows == (Window("today", 0, "UTC"),)


def test_per_account_calendar_windows() -> None:
    config = parse_config(
        {
            "accounts": [
                {
                    "name": "shop-a",
                    "rest_key_env": "SHOP_A_KEY",
                    "windows": ["yesterday"],
                    "timezone": "America/New_York",
                }
            ]
        },
        env=ENV,
    )
    assert config.accounts[0].windows == (Window("yesterday", 0, "America/New_York"),)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            config_with(timezone="Europe/Bucharestt"),
            ["timezone: unknown time zone 'Europe/Bucharestt' (use an IANA name such as "
             "Europe/Bucharest, America/New_York or UTC; names are case-sensitive)"],
            id="unknown-global",
        ),
        pytest.param(
            {"accounts": [{"name": "a", "rest_key_env": "SHOP_A_KEY", "timezone": "utc"}]},
            ["accounts[0].timezone: unknown time zone 'utc' (use an IANA name such as "
             "Europe/Bucharest, America/New_York or UTC; names are case-sensitive)"],
            id="unknown-account-case",
        ),
        pytest.param(
            {"accounts": [{"name": "a", "rest_key_env": "SHOP_A_KEY", "timezone": "../etc"}]},
            ["accounts[0].timezone: unknown time zone '../etc' (use an IANA name such as "
             "Europe/Bucharest, America/New_York or UTC; names are case-sensitive)"],
            id="path-is-not-a-zone",
        ),
        pytest.param(
            config_with(timezone=3),
            ["timezone: must be an IANA time zone name such as Europe/Bucharest or UTC, got int"],
            id="not-a-string",
        ),
        pytest.param(
            config_with(windows=["today", "yesterday", "today"]),
            ["windows[2]: window today is listed twice"],
            id="today-twice",
        ),
        pytest.param(
            config_with(windows=["tomorrow"]),
            ["windows[0]: 'tomorrow' is neither a duration (such as 24h or 30d) nor today or "
             "yesterday"],
            id="unknown-day",
        ),
        pytest.param(
            config_with(timezone="Mars/Olympus", windows=["Today"]),
            ["timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as "
             "Europe/Bucharest, America/New_York or UTC; names are case-sensitive)",
             "windows[0]: 'Today' is neither a duration (such as 24h or 30d) nor today or "
             "yesterday"],
            id="all-problems-at-once",
        ),
    ],
)  # fmt: skip
def test_invalid_calendar_config(data: object, expected: list[str]) -> None:
    assert problems_of(data) == expected


def test_today_is_not_a_duplicate_of_24h() -> None:
    config = parse_config(config_with(windows=["24h", "today"]), env=ENV)
    assert [w.name for w in config.windows] == ["24h", "today"]


# --- day boundaries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "now", "start", "hours"),
    [
        # Spring forward: 03:00 → 04:00 in Bucharest, 02:00 → 03:00 in New York. 23 h days.
        ("Europe/Bucharest", "2024-04-01T09:00:00+03:00", "2024-03-31T00:00:00+02:00", 23),
        ("America/New_York", "2024-03-11T09:00:00-04:00", "2024-03-10T00:00:00-05:00", 23),
        # Fall back: 04:00 → 03:00 in Bucharest, 02:00 → 01:00 in New York. 25 h days.
        ("Europe/Bucharest", "2024-10-28T09:00:00+02:00", "2024-10-27T00:00:00+03:00", 25),
        ("America/New_York", "2024-11-04T09:00:00-05:00", "2024-11-03T00:00:00-04:00", 25),
        # The southern hemisphere changes the other way round.
        ("Pacific/Auckland", "2024-04-08T09:00:00+12:00", "2024-04-07T00:00:00+13:00", 25),
        ("Pacific/Auckland", "2024-09-30T09:00:00+13:00", "2024-09-29T00:00:00+12:00", 23),
        # No DST: always 24 h.
        ("UTC", "2024-03-31T09:00:00+00:00", "2024-03-30T00:00:00+00:00", 24),
        # Where the change skips midnight itself (00:00 → 01:00), the day starts at 01:00.
        ("America/Sao_Paulo", "2018-11-05T09:00:00-02:00", "2018-11-04T01:00:00-02:00", 23),
    ],
)
def test_yesterday_is_the_last_complete_local_day(
    zone: str, now: str, start: str, hours: int
) -> None:
    date_from, date_to = day("yesterday", zone).bounds(at(now), 0)
    assert (
        local(date_from, zone)
        == datetime.fromisoformat(start).astimezone(ZoneInfo(zone)).isoformat()
    )
    assert (date_to - date_from) == hours * 3600
    assert datetime.fromtimestamp(date_to, ZoneInfo(zone)).time().isoformat() == "00:00:00"


@pytest.mark.parametrize(
    ("zone", "now", "hours_so_far"),
    [
        # Noon on the DST days: 11 h and 13 h have passed since midnight, not 12.
        ("Europe/Bucharest", "2024-03-31T12:00:00+03:00", 11),
        ("Europe/Bucharest", "2024-10-27T12:00:00+02:00", 13),
        ("America/New_York", "2024-03-10T12:00:00-04:00", 11),
        ("America/New_York", "2024-11-03T12:00:00-05:00", 13),
        ("America/New_York", "2024-11-04T12:00:00-05:00", 12),
    ],
)
def test_today_counts_real_hours_since_local_midnight(
    zone: str, now: str, hours_so_far: int
) -> None:
    date_from, date_to = day("today", zone).bounds(at(now), 0)
    assert date_to == int(at(now))
    assert date_to - date_from == hours_so_far * 3600


@pytest.mark.parametrize(
    ("zone", "now", "today_from", "yesterday_from", "yesterday_to"),
    [
        # East of UTC: local day 2024-06-02 has started while it is still 06-01 in UTC.
        ("Pacific/Auckland", "2024-06-01T20:00:00Z",
         "2024-06-01T12:00:00Z", "2024-05-31T12:00:00Z", "2024-06-01T12:00:00Z"),
        # West of UTC: it is still 05-31 locally although 06-01 in UTC.
        ("America/Los_Angeles", "2024-06-01T03:00:00Z",
         "2024-05-31T07:00:00Z", "2024-05-30T07:00:00Z", "2024-05-31T07:00:00Z"),
        ("UTC", "2024-06-01T03:00:00Z",
         "2024-06-01T00:00:00Z", "2024-05-31T00:00:00Z", "2024-06-01T00:00:00Z"),
    ],
)  # fmt: skip
def test_days_either_side_of_utc(
    zone: str, now: str, today_from: str, yesterday_from: str, yesterday_to: str
) -> None:
    assert day("today", zone).bounds(at(now), 0) == (int(at(today_from)), int(at(now)))
    assert day("yesterday", zone).bounds(at(now), 0) == (
        int(at(yesterday_from)),
        int(at(yesterday_to)),
    )


def test_end_offset_moves_the_day_back_too() -> None:
    # 00:30 local with a 1h end offset: the windows end at 23:30 of the previous local day.
    now = at("2024-06-02T00:30:00+03:00")
    today = day("today", "Europe/Bucharest")
    assert today.bounds(now, 3600) == (
        int(at("2024-06-01T00:00:00+03:00")),
        int(at("2024-06-01T23:30:00+03:00")),
    )


def test_today_at_local_midnight_is_empty() -> None:
    midnight = at("2024-06-02T00:00:00-07:00")
    assert day("today", "America/Los_Angeles").bounds(midnight, 0) == (
        int(midnight),
        int(midnight),
    )


# --- the live exporter ----------------------------------------------------------------------------


async def test_poller_requests_the_local_day_and_labels_it(clients: Clients) -> None:
    fake = FakeApi([FakeAccount("key-a", seed=3)])
    url = await fake.start()
    try:
        config = parse_config(
            config_with(
                api={"url": url},
                windows=["today", "yesterday"],
                timezone="America/New_York",
            ),
            env=ENV,
        )
        now = at("2024-11-03T12:00:00-05:00")  # the 25 h day: 13 h since midnight
        client = clients.new(url, timeout=5)
        store = SnapshotStore()
        snapshot = await Poller(config, client, store, clock=SystemClock(lambda: now)).poll(
            config.accounts[0]
        )
    finally:
        await fake.close()
    asked = sorted((int(r.date_from or 0), int(r.date_to or 0)) for r in fake.requests)
    midnight = int(at("2024-11-03T00:00:00-04:00"))
    assert asked == [(int(at("2024-11-02T00:00:00-04:00")), midnight), (midnight, int(now))]
    text = "".join(render_account(snapshot, now))
    assert (
        'retargeting_impressions{account="shop-a",source_name="Newsletter",window="today"}' in text
    )
    assert 'window="yesterday"' in text
    assert snapshot.up


def test_dashboard_has_a_today_so_far_view() -> None:
    dashboard = json.loads((REPO / "grafana" / "retargeting-exporter.json").read_text())
    today = {
        p["title"]: p["targets"][0]["expr"]
        for p in dashboard["panels"]
        if p["title"].endswith(" today")
    }
    assert set(today) == {
        f"{figure} today" for figure in ("Impressions", "Clicks", "Orders", "Revenue", "CTR", "CVR")
    }
    for title, expr in today.items():
        assert expr.count('window="today"') == expr.count("window="), title
