"""The built-in demo: accounts served by the local fake API and the config that polls them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from exporter.config import Config, parse_config

# (account name, rest key on the fake API, labels). demo-revoked's key is unknown to the fake,
# so it answers "Incorrect rest key!"; demo-key-inactive belongs to an inactive account.
DEMO_ACCOUNTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("demo-fashion", "demo-key-fashion", {"team": "emea", "plan": "paid"}),
    ("demo-electronics", "demo-key-electronics", {"team": "emea", "plan": "paid"}),
    ("demo-garden", "demo-key-garden", {"team": "americas", "plan": "payment_error"}),
    ("demo-inactive", "demo-key-inactive", {"team": "americas", "plan": "inactive"}),
    ("demo-revoked", "demo-key-revoked", {"team": "apac", "plan": "paid"}),
)


# Agencies serve shops in several currencies; the dashboard totals revenue per currency.
DEMO_CURRENCIES = {"demo-fashion": "RON", "demo-electronics": "EUR", "demo-garden": "HUF"}


def _env_name(account: str) -> str:
    return "DEMO_KEY_" + account.removeprefix("demo-").upper()


def demo_config(api_url: str, interval: float) -> Config:
    """The demo's config, polling ``api_url`` every ``interval`` seconds.

    Keys come from an in-memory environment, so nothing secret-looking is written anywhere.
    The demo may poll faster than the 30 s minimum of real configs (the fake has no rate limit).
    """
    data: dict[str, Any] = {
        "api": {"url": api_url, "timeout": "5s", "max_concurrency": 4},
        "polling": {"interval": "30s"},
        "windows": ["24h", "30d", "today"],
        "accounts": [
            {
                "name": name,
                "rest_key_env": _env_name(name),
                "labels": labels,
                "currency": DEMO_CURRENCIES.get(name, "RON"),
            }
            for name, _, labels in DEMO_ACCOUNTS
        ],
    }
    env = {_env_name(name): key for name, key, _ in DEMO_ACCOUNTS}
    config = parse_config(data, source="<demo>", env=env)
    stale = 3 * interval
    return replace(
        config,
        polling=replace(config.polling, interval=interval, stale_after=stale),
        accounts=tuple(replace(a, interval=interval, stale_after=stale) for a in config.accounts),
    )
