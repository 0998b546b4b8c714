"""Config loading: valid files become dataclasses, every bad one gets exact, path-named problems."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from tooling import REPO
from yarl import URL

from exporter.apiurls import ProxyUrl, url_problem, user_agent_problem
from exporter.config import (
    DEFAULT_API_URL,
    RestKey,
    load_config,
    parse_config,
)
from exporter.logs import Redactor
from exporter.refresh import refresh_of, stale_limit_of
from exporter.window import Window
from exporter.yamlcheck import ConfigError, format_duration, parse_duration

ENV = {"SHOP_A_KEY": "key-aaa", "SHOP_B_KEY": "key-bbb", "EMPTY": "  "}


def minimal(**extra: object) -> dict[str, object]:
    data: dict[str, object] = {"accounts": [{"name": "shop-a", "rest_key_env": "SHOP_A_KEY"}]}
    data.update(extra)
    return data


def problems_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cfg.yaml", env=ENV if env is None else env)
    return info.value.problems


def test_defaults() -> None:
    config = parse_config(minimal(), env=ENV)
    assert config.api.url == DEFAULT_API_URL
    assert config.api.timeout == 15
    assert config.api.max_concurrency == 8
    assert config.api.user_agent.startswith("retargeting-exporter/")
    assert config.polling.interval == 300
    assert config.polling.stale_after == 900
    assert config.polling.end_offset == 0
    assert [w.name for w in config.windows] == ["24h", "30d"]
    account = config.accounts[0]
    assert account.rest_key.reveal() == "key-aaa"
    assert account.key_source == "env SHOP_A_KEY"
    assert account.interval == 300 and account.stale_after == 900
    assert [w.seconds for w in account.windows] == [86400, 30 * 86400]


def test_full_example_file_is_valid() -> None:
    env = {"SHOP_FASHION_KEY": "k1", "SHOP_ELECTRONICS_KEY": "k2"}
    config = load_config(REPO / "config.example.yaml", env=env | dict(os.environ))
    assert len(config.accounts) >= 2
    assert config.source.endswith("config.example.yaml")


def test_overrides_per_account(tmp_path: Path) -> None:
    key_file = tmp_path / "shop-b.key"
    key_file.write_text("file-key\n")
    config = parse_config(
        {
            "polling": {"interval": "2m", "jitter": "10s", "end_offset": "1h"},
            "windows": ["1h", "7d"],
            "accounts": [
                {"name": "a", "rest_key_env": "SHOP_A_KEY", "labels": {"team": "x", "vip": True}},
                {
                    "name": "b",
                    "rest_key_file": "shop-b.key",
                    "windows": ["24h"],
                    "interval": "10m",
                },
                {"name": "c", "rest_key": 12345},
            ],
        },
        env=ENV,
        base_dir=tmp_path,
    )
    a, b, c = config.accounts
    assert a.labels == {"team": "x", "vip": "true"}
    assert [w.name for w in a.windows] == ["1h", "7d"] and a.interval == 120
    assert a.stale_after == 360  # 3 x the account's interval
    assert b.rest_key.reveal() == "file-key" and b.key_source == f"file {key_file}"
    assert [w.name for w in b.windows] == ["24h"] and b.interval == 600 and b.stale_after == 1800
    assert c.rest_key.reveal() == "12345" and c.key_source == "literal"
    assert config.polling.end_offset == 3600


BAD_CONFIGS = [
    pytest.param([1, 2], ["must be a mapping, got a list"], id="not-a-mapping"),
    pytest.param(
        {},
        ["accounts: must be a non-empty list of accounts (or give account_files)"],
        id="no-accounts",
    ),
    pytest.param(
        minimal(pollng={"interval": "1m"}),
        ["pollng: unknown key (did you mean 'polling'?)"],
        id="typo-top-level",
    ),
    pytest.param(
        minimal(polling={"intervall": "1m"}),
        ["polling.intervall: unknown key (did you mean 'interval'?)"],
        id="typo-nested",
    ),
    pytest.param(
        minimal(polling={"interval": "10s"}),
        ["polling.interval: must be at least 30s, got 10s"],
        id="interval-too-short",
    ),
    pytest.param(
        minimal(polling={"interval": "5 minutes"}),
        ["polling.interval: '5 minutes' is not a duration (use e.g. 30s, 5m, 1h30m, 7d)"],
        id="interval-not-duration",
    ),
    pytest.param(
        minimal(polling={"interval": "1m", "jitter": "40s"}),
        ["polling.jitter: must be at most half of polling.interval"],
        id="jitter-too-big",
    ),
    pytest.param(
        minimal(polling={"interval": "5m", "stale_after": "1m"}),
        [
            "polling.stale_after: must be at least polling.interval",
            "accounts[0] (shop-a).stale_after: must be at least the account's polling interval",
        ],
        id="stale-before-interval",
    ),
    pytest.param(
        minimal(windows=["31d"]),
        ["windows[0]: window 31d must be between 1h and 30d (the API's limit)"],
        id="window-too-long",
    ),
    pytest.param(
        minimal(windows=["30m"]),
        ["windows[0]: window 30m must be between 1h and 30d (the API's limit)"],
        id="window-too-short",
    ),
    pytest.param(
        minimal(windows=["24h", "1d"]),
        ["windows[1]: window 1d is listed twice"],
        id="window-duplicate",
    ),
    pytest.param(
        minimal(windows=[]),
        ["windows: must be a non-empty list of durations such as [24h, 30d]"],
        id="windows-empty",
    ),
    pytest.param(
        minimal(api={"url": "ftp://x", "max_concurrency": 0, "timeout": "0s"}),
        [
            "api.url: must be an http(s) URL, got 'ftp://x'",
            "api.timeout: must be at least 100ms, got 0s",
            "api.max_concurrency: must be an integer from 1 to 10000, got 0",
        ],
        id="api-values",
    ),
    pytest.param(
        minimal(api={"url": "https://x.test/ts?rest_key=abc"}),
        ["api.url: must not contain the rest key; give keys per account"],
        id="api-url-with-key",
    ),
    pytest.param(
        minimal(api={"url": "https://user:s3cret@api.example.test/x"}),
        ["api.url: must not carry a user name or password"],
        id="api-url-with-password",
    ),
    pytest.param(
        minimal(api={"url": "https://api.example.test:99999/x"}),
        ["api.url: is not a valid URL (Port out of range 0-65535)"],
        id="api-url-bad-port",
    ),
    pytest.param(
        minimal(api={"url": "https://api.example.test/a b"}),
        ["api.url: must be ASCII without spaces (percent-encode the rest)"],
        id="api-url-with-space",
    ),
    pytest.param(
        minimal(api={"user_agent": "x\r\nX-Injected: 1"}),
        ["api.user_agent: must be printable text on one line"],
        id="user-agent-with-newline",
    ),
    pytest.param(
        minimal(api={"url": "https://user:pass/word@api.example.test/x"}),
        ["api.url: is not a valid URL (its host and port cannot be read)"],
        id="api-url-never-quotes-a-password",
    ),
    pytest.param(
        minimal(max_sources_per_account=0),
        ["max_sources_per_account: must be an integer from 1 to 100, got 0"],
        id="max-sources-out-of-range",
    ),
    pytest.param(
        {"accounts": [{"name": "a"}]},
        [
            "accounts[0] (a): needs exactly one of rest_key_env, rest_key_file, "
            "rest_key_credential, rest_key (none is set)"
        ],
        id="no-key",
    ),
    pytest.param(
        {"accounts": [{"name": "a", "rest_key_env": "SHOP_A_KEY", "rest_key": "x"}]},
        [
            "accounts[0] (a): needs exactly one of rest_key_env, rest_key_file, "
            "rest_key_credential, rest_key (rest_key_env and rest_key are all set)"
        ],
        id="two-keys",
    ),
    pytest.param(
        {
            "accounts": [
                {"name": "a", "rest_key_env": "SHOP_A_KEY"},
                {"name": "b", "rest_key_env": "SHOP_B_KEY"},
                {"name": "c", "rest_key_env": "SHOP_KEY"},
            ]
        },
        ["accounts[2] (c).rest_key_env: environment variable SHOP_KEY is not set"],
        id="env-not-set",
    ),
    pytest.param(
        {"accounts": [{"name": "a", "rest_key_env": "EMPTY"}]},
        ["accounts[0] (a).rest_key_env: environment variable EMPTY is empty"],
        id="env-empty",
    ),
    pytest.param(
        {"accounts": [{"name": "a", "rest_key_file": "/nonexistent/key"}]},
        ["accounts[0] (a).rest_key_file: cannot read /nonexistent/key: No such file or directory"],
        id="key-file-missing",
    ),
    pytest.param(
        {
            "accounts": [
                {"name": "a", "rest_key_env": "SHOP_A_KEY"},
                {"name": "a", "rest_key_env": "SHOP_B_KEY"},
            ]
        },
        ["accounts[1] (a).name: 'a' is already used by accounts[0]"],
        id="duplicate-name",
    ),
    pytest.param(
        {"accounts": [{"rest_key_env": "SHOP_A_KEY"}, "shop-b"]},
        [
            "accounts[0].name: must be a non-empty string",
            "accounts[1]: must be a mapping with at least name and rest_key_env, got a string",
        ],
        id="account-shapes",
    ),
    pytest.param(
        {
            "accounts": [
                {
                    "name": "a",
                    "rest_key_env": "SHOP_A_KEY",
                    "labels": {"account": "x", "bad-name": "y", "ok": ["z"]},
                    "windows": ["2h", "45d"],
                    "interval": "1s",
                    "rest_keyenv": "x",
                }
            ]
        },
        [
            "accounts[0] (a).rest_keyenv: unknown key (did you mean 'rest_key_env'?)",
            "accounts[0] (a).labels.account: "
            "account is set by the exporter and cannot be configured",
            "accounts[0] (a).labels.bad-name: is not a valid Prometheus label name",
            "accounts[0] (a).labels.ok: must be a string",
            "accounts[0] (a).windows[1]: window 45d must be between 1h and 30d (the API's limit)",
            "accounts[0] (a).interval: must be at least 30s, got 1s",
        ],
        id="account-fields",
    ),
    pytest.param(
        minimal(windows=["24h", {"window": "30d", "refresh": "1m"}]),
        [
            "windows[1].refresh: refresh 1m of window 30d is below the polling interval 5m: "
            "a window is asked for at most once per poll"
        ],
        id="refresh-below-interval",
    ),
    pytest.param(
        minimal(windows=[{"window": "30d", "refresh": "2h", "stale_after": "1h"}]),
        [
            "windows[0].stale_after: refresh 2h of window 30d is above its stale_after 1h: "
            "its figures would go stale between refreshes"
        ],
        id="refresh-above-stale-limit",
    ),
    pytest.param(
        minimal(windows=[{"window": "yesterday", "stale_after": "30m"}]),
        [
            "windows[0].stale_after: refresh 1h of window yesterday is above its stale_after "
            "30m: its figures would go stale between refreshes"
        ],
        id="default-yesterday-refresh-above-stale-limit",
    ),
    pytest.param(
        {
            "windows": [{"window": "30d", "refresh": "10m"}],
            "accounts": [
                {"name": "slow", "rest_key_env": "SHOP_A_KEY", "interval": "15m"},
                {
                    "name": "own",
                    "rest_key_env": "SHOP_B_KEY",
                    "windows": ["24h", {"window": "7d", "refresh": "1m"}],
                },
            ],
        },
        [
            "windows[0].refresh: refresh 10m of window 30d is below the polling interval 15m "
            "of account slow: a window is asked for at most once per poll",
            "accounts[1] (own).windows[1].refresh: refresh 1m of window 7d is below the polling "
            "interval 5m: a window is asked for at most once per poll",
        ],
        id="refresh-per-account",
    ),
    pytest.param(
        minimal(
            windows=[
                {"window": "30d", "refresh": "an hour", "every": "1h"},
                {"refresh": "1h"},
                {"window": ["30d"]},
                {"window": "45d", "refresh": "1h"},
                {"window": "24h", "refresh": "10s"},
            ]
        ),
        [
            "windows[0].every: unknown key",
            "windows[0].refresh: 'an hour' is not a duration (use e.g. 30s, 5m, 1h30m, 7d)",
            "windows[1]: needs window: a duration such as 24h or 30d, today, yesterday, or "
            "{window: 30d, refresh: 1h}",
            "windows[2].window: must be a duration such as 24h or 30d, today, yesterday, or "
            "{window: 30d, refresh: 1h}, got a list",
            "windows[3].window: window 45d must be between 1h and 30d (the API's limit)",
            "windows[4].refresh: must be at least 30s, got 10s",
        ],
        id="window-entry-shapes",
    ),
    pytest.param(
        minimal(windows=["30d", {"window": "720h", "refresh": "1h"}]),
        ["windows[1]: window 720h is listed twice"],
        id="window-entry-twice",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD_CONFIGS)
def test_bad_configs_report_every_problem_with_its_path(data: object, expected: list[str]) -> None:
    assert problems_of(data) == expected


def test_error_message_names_the_file_and_lists_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"accounts": [{"name": "a"}], "x": 1}, source="/etc/ret.yaml", env={})
    text = str(info.value)
    assert text.startswith("invalid configuration /etc/ret.yaml:\n")
    assert "  - x: unknown key" in text
    assert "  - accounts[0] (a): needs exactly one of" in text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("accounts: [\n", "line 2, column 1: expected the node content"),
        ("a: b\n  c: d\n", "line 2, column 4: mapping values are not allowed here"),
    ],
)
def test_yaml_syntax_errors_name_line_and_column(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    assert info.value.problems[0].startswith(problem.split(":")[0])
    assert problem.split(": ", 1)[1] in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == ["file not found"]


def test_literal_key_in_world_readable_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"accounts": [{"name": "a", "rest_key": "lit-key-123"}]}))
    path.chmod(0o644)
    (warning,) = load_config(path, env={}).warnings
    assert "readable by other users (mode 644)" in warning and "account(s) a" in warning
    assert "lit-key-123" not in warning
    path.chmod(0o600)
    assert load_config(path, env={}).warnings == ()


def test_rest_key_never_shows_in_repr() -> None:
    config = parse_config(minimal(), env=ENV)
    key = config.accounts[0].rest_key
    assert "key-aaa" not in repr(key) and "key-aaa" not in str(key)
    assert "key-aaa" not in repr(config)
    assert key == RestKey("key-aaa")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("24h", 86400), ("30d", 2592000), ("1w", 604800),
     ("1500ms", 1.5)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "1h 30m", "-5m", "1.5h", "5M"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(30 * 86400) == "30d"
    assert format_duration(0.25) == "250ms"
    assert format_duration(0) == "0s"


def test_window_bounds_are_integer_seconds_at_most_30_days_apart() -> None:
    window = Window.parse("30d")
    date_from, date_to = window.bounds(1_700_000_000.9, end_offset=3600)
    assert date_to == 1_700_000_000 - 3600
    assert date_to - date_from == 30 * 86400
    assert isinstance(date_from, int) and isinstance(date_to, int)


def test_config_check_cli_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("accounts:\n  - name: a\n    rest_key_env: NOT_SET_ANYWHERE\n")
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", f"--config.file={path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "accounts[0] (a).rest_key_env: environment variable NOT_SET_ANYWHERE is not set" in (
        result.stderr
    )


# -- the API URL and User-Agent checks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.test/", "must be http:// or https:// with a host"),
        ("http:///path", "must be http:// or https:// with a host"),
        ("https://user:pw@example.test/", "must not carry a user name or password"),
        ("https://example.test:99999/", "is not a valid URL (Port out of range 0-65535)"),
        ("https://example.test:port/", "is not a valid URL (its host and port cannot be read)"),
        ("https://example.test/a b", "must be ASCII without spaces (percent-encode the rest)"),
        ("https://exämple.test/", "must be ASCII without spaces (percent-encode the rest)"),
    ],
)
def test_urls_the_client_cannot_use(url: str, problem: str) -> None:
    assert url_problem(url) == problem


@pytest.mark.parametrize(
    "url", [DEFAULT_API_URL, "http://127.0.0.1:8080/ts", "https://[::1]:8443/x?a=%20b"]
)
def test_urls_the_client_can_use(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("agent", "problem"),
    [
        ("x\r\nX-Evil: 1", "must be printable text on one line"),
        ("tab\there", "must be printable text on one line"),
        ("retargeting-exporter/1.0 (agency-x)", None),
    ],
)
def test_a_user_agent_cannot_inject_headers(agent: str, problem: str | None) -> None:
    assert user_agent_problem(agent) == problem


# -- api.proxy_url -------------------------------------------------------------------------------

PROXY_USER, PROXY_PASSWORD = "alice-ZQ8", "pw-SECRETZQ9"


def proxy_of(url: object) -> ProxyUrl | None:
    return parse_config(minimal(api={"proxy_url": url}), env=ENV).api.proxy_url


@pytest.mark.parametrize(
    ("url", "host", "port", "username", "password", "shown", "revealed"),
    [
        ("http://proxy.example:3128", "proxy.example", 3128, "", "",
         "http://proxy.example:3128", "http://proxy.example:3128"),
        ("http://proxy.example", "proxy.example", 80, "", "",
         "http://proxy.example:80", "http://proxy.example:80"),
        ("HTTP://Proxy.Example:3128/", "proxy.example", 3128, "", "",
         "http://proxy.example:3128", "http://proxy.example:3128"),
        ("http://10.0.0.1:8080", "10.0.0.1", 8080, "", "",
         "http://10.0.0.1:8080", "http://10.0.0.1:8080"),
        ("http://[::1]:3128", "::1", 3128, "", "", "http://[::1]:3128", "http://[::1]:3128"),
        ("http://alice:s3cr%40t@proxy.example:3128", "proxy.example", 3128, "alice", "s3cr@t",
         "http://proxy.example:3128 (with credentials)",
         "http://alice:s3cr%40t@proxy.example:3128"),
        ("http://alice:p@ss:w@proxy.example:3128", "proxy.example", 3128, "alice", "p@ss:w",
         "http://proxy.example:3128 (with credentials)",
         "http://alice:p%40ss%3Aw@proxy.example:3128"),
        ("http://alice@proxy.example", "proxy.example", 80, "alice", "",
         "http://proxy.example:80 (with credentials)", "http://alice@proxy.example:80"),
    ],
)  # fmt: skip
def test_proxy_url_valid_forms(
    url: str, host: str, port: int, username: str, password: str, shown: str, revealed: str
) -> None:
    proxy = proxy_of(url)
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.username, proxy.password) == (
        host,
        port,
        username,
        password,
    )
    assert str(proxy) == repr(proxy) == shown
    assert proxy.reveal() == revealed
    assert proxy == ProxyUrl.parse(url)


@pytest.mark.parametrize("data", [minimal(), minimal(api={"proxy_url": None})])
def test_without_proxy_url_the_environment_decides(data: dict[str, object]) -> None:
    assert parse_config(data, env=ENV).api.proxy_url is None


WHERE = "http://[user:password@]host[:port]"
BAD_PROXY_URLS = [
    pytest.param(
        3128, "must be an http:// URL such as http://proxy.example:3128, got int", id="number"
    ),
    pytest.param(
        {"host": "proxy.example"},
        "must be an http:// URL such as http://proxy.example:3128, got a mapping",
        id="mapping",
    ),
    pytest.param("", "must be an http:// URL such as http://proxy.example:3128", id="empty"),
    pytest.param(
        f"https://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128",
        "must be an http:// URL: https:// proxies (TLS to the proxy itself) are not supported; "
        "requests to an https:// api.url travel encrypted through the proxy's CONNECT tunnel "
        "all the same",
        id="https",
    ),
    pytest.param(
        f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:1080",
        "must be an http:// URL such as http://proxy.example:3128",
        id="socks",
    ),
    pytest.param(
        f"{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128",
        "must be an http:// URL such as http://proxy.example:3128",
        id="no-scheme-with-credentials",
    ),
    pytest.param(
        "proxy.example:3128",
        "must be an http:// URL such as http://proxy.example:3128",
        id="no-scheme",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@",
        f"must name the proxy's host: {WHERE}",
        id="no-host",
    ),
    pytest.param("http://:3128", f"must name the proxy's host: {WHERE}", id="port-only"),
    pytest.param(
        f"http://{PROXY_USER}:pw/{PROXY_PASSWORD}@proxy.example:3128",
        "is not a valid URL (its host and port cannot be read; percent-encode / ? # @ : in the "
        "user name and password)",
        id="slash-in-password",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128/proxy",
        f"must not have a path, query or fragment: {WHERE}",
        id="path",
    ),
    pytest.param(
        "http://proxy.example:3128/?via=1",
        f"must not have a path, query or fragment: {WHERE}",
        id="query",
    ),
    pytest.param(
        "http://proxy.example:3128#top",
        f"must not have a path, query or fragment: {WHERE}",
        id="fragment",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:99999",
        "is not a valid URL (Port out of range 0-65535)",
        id="port-too-big",
    ),
    pytest.param(
        "http://proxy.example:0",
        "is not a valid URL (port 0; use a port from 1 to 65535)",
        id="port-0",
    ),
    pytest.param(
        "http://proxy.example:squid",
        "is not a valid URL (its host and port cannot be read)",
        id="port-not-a-number",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD} x@proxy.example:3128",
        "must be ASCII without spaces (percent-encode the rest)",
        id="space",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}€@proxy.example:3128",
        "must be ASCII without spaces (percent-encode the rest)",
        id="not-ascii",
    ),
    pytest.param(
        f"http://{PROXY_USER}:{PROXY_PASSWORD}%E2%82%AC@proxy.example:3128",
        "the user name and password must be Latin-1 text once percent-decoded (the proxy "
        "receives them by Basic authentication)",
        id="not-latin-1",
    ),
    pytest.param(
        f"http://{PROXY_USER}%3Ax:{PROXY_PASSWORD}@proxy.example:3128",
        "the user name must not contain ':' (Basic authentication cannot)",
        id="colon-in-user-name",
    ),
]


@pytest.mark.parametrize(("url", "problem"), BAD_PROXY_URLS)
def test_bad_proxy_urls_are_named_without_their_credentials(url: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(api={"proxy_url": url}), source="cfg.yaml", env=ENV)
    assert info.value.problems == [f"api.proxy_url: {problem}"]
    text = str(info.value)
    assert "SECRETZQ9" not in text and "ZQ8" not in text


def test_config_secrets_are_the_rest_keys_and_every_spelling_of_the_proxy_password() -> None:
    both = {"accounts": [
        {"name": "a", "rest_key_env": "SHOP_A_KEY"}, {"name": "b", "rest_key_env": "SHOP_B_KEY"}
    ]}  # fmt: skip
    assert parse_config(both, env=ENV).secrets() == ["key-aaa", "key-bbb"]
    config = parse_config(
        both | {"api": {"proxy_url": "http://alice:s3cr%40t!@proxy.example:3128"}}, env=ENV
    )
    header = base64.b64encode(b"alice:s3cr@t!").decode()
    assert sorted(config.secrets()) == sorted(
        ["key-aaa", "key-bbb", "s3cr@t!", "s3cr%40t!", "s3cr%40t%21", "alice:s3cr@t!", header]
    )
    without_password = parse_config(
        both | {"api": {"proxy_url": "http://alice@proxy.example:3128"}}, env=ENV
    )
    assert without_password.secrets() == ["key-aaa", "key-bbb"]


@pytest.mark.parametrize(
    "password", ["s3cr@t", "p@ss:w/rd?#%41", "a!b$c&'()*+,;=d", "caf\u00e9 \u00ff", "~-._", "%"]
)
def test_aiohttp_gets_the_proxy_credentials_and_the_redactor_knows_its_spellings(
    password: str,
) -> None:
    proxy = ProxyUrl("proxy.example", 3128, "alice", password)
    url = URL(proxy.reveal())
    assert (url.scheme, url.host, url.port) == ("http", "proxy.example", 3128)
    # aiohttp takes the proxy's credentials from the URL this way, and sends them in Latin-1.
    auth = aiohttp.BasicAuth.from_url(url)
    assert auth is not None and (auth.login, auth.password) == ("alice", password)
    header = auth.encode()
    secrets = parse_config(minimal(api={"proxy_url": proxy.reveal()}), env=ENV).secrets()
    line = f"GET {url} via {url.raw_password} ({url.password}); {header}; {proxy.reveal()}"
    scrubbed = Redactor(secrets).scrub(line)
    assert password not in scrubbed and header.split(" ", 1)[1] not in scrubbed
    assert url.raw_password is not None and url.raw_password not in scrubbed
    assert scrubbed.count("<redacted>") == 5


def test_proxy_credentials_never_show_in_the_config_repr() -> None:
    config = parse_config(
        minimal(api={"proxy_url": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128"}),
        env=ENV,
    )
    for text in (repr(config), str(config.api), repr(config.api.proxy_url)):
        assert "SECRETZQ9" not in text and "ZQ8" not in text
    assert "proxy_url=http://proxy.example:3128 (with credentials)" in repr(config.api)


def test_a_proxy_password_in_a_world_readable_file_warns(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128"
    path.write_text(yaml.safe_dump(minimal(api={"proxy_url": url})))
    path.chmod(0o644)
    (warning,) = load_config(path, env=ENV).warnings
    assert warning == (
        f"{path} is readable by other users (mode 644) and holds the proxy password in "
        f"api.proxy_url: chmod 600 {path}, or leave api.proxy_url out and set HTTPS_PROXY "
        "in the exporter's environment"
    )
    path.chmod(0o600)
    assert load_config(path, env=ENV).warnings == ()
    path.write_text(yaml.safe_dump(minimal(api={"proxy_url": "http://proxy.example:3128"})))
    path.chmod(0o644)
    assert load_config(path, env=ENV).warnings == ()


def test_a_key_from_a_systemd_credential(tmp_path: Path) -> None:
    """LoadCredential=NAME:PATH puts the key at $CREDENTIALS_DIRECTORY/NAME; the config names
    NAME, so the same file works wherever systemd mounts the directory."""
    (tmp_path / "shop-a").write_text("key-from-credential\n")
    data = {"accounts": [{"name": "shop-a", "rest_key_credential": "shop-a"}]}
    config = parse_config(data, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    [account] = config.accounts
    assert account.rest_key.reveal() == "key-from-credential"
    assert account.key_source == "credential shop-a"


@pytest.mark.parametrize(
    ("name", "env", "problem"),
    [
        pytest.param(
            "shop-a",
            {},
            "needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential=; "
            "outside systemd use rest_key_file",
            id="not-under-systemd",
        ),
        pytest.param("../shop-a", None, "is not a credential name", id="a-path"),
        pytest.param("..", None, "is not a credential name", id="dot-dot"),
        pytest.param(
            "shop-b", None, "cannot read {dir}/shop-b: No such file or directory", id="missing"
        ),
        pytest.param("empty", None, "{dir}/empty is empty", id="empty"),
    ],
)
def test_bad_credentials_are_named(
    tmp_path: Path, name: str, env: dict[str, str] | None, problem: str
) -> None:
    (tmp_path / "shop-a").write_text("key")
    (tmp_path / "empty").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)} if env is None else env
    data = {"accounts": [{"name": "a", "rest_key_credential": name}]}
    assert problems_of(data, env) == [
        f"accounts[0] (a).rest_key_credential: {problem.format(dir=tmp_path)}"
    ]


def test_windows_may_set_a_refresh_and_stale_after_beside_plain_names() -> None:
    config = parse_config(
        minimal(
            windows=["24h", {"window": "30d", "refresh": "1h"}, "yesterday"],
            accounts=[
                {"name": "a", "rest_key_env": "SHOP_A_KEY"},
                {
                    "name": "b",
                    "rest_key_env": "SHOP_B_KEY",
                    "interval": "10m",
                    "windows": [{"window": "today", "refresh": "30m", "stale_after": "2h"}],
                },
            ],
        ),
        env=ENV,
    )
    a, b = config.accounts
    assert [(w.name, refresh_of(w, a.interval)) for w in a.windows] == [
        ("24h", 300),
        ("30d", 3600),
        ("yesterday", 3600),  # figures of a closed day only settle: hourly by default
    ]
    # Each window keeps the account's margin for missed polls past its own next refresh.
    assert [stale_limit_of(w, a.interval, a.stale_after) for w in a.windows] == [900, 4200, 4200]
    (today,) = b.windows
    assert (today.refresh, refresh_of(today, b.interval)) == (1800, 1800)
    assert stale_limit_of(today, b.interval, b.stale_after) == 7200


def test_example_file_refreshes_30d_hourly() -> None:
    env = {"SHOP_FASHION_KEY": "k1", "SHOP_ELECTRONICS_KEY": "k2"}
    config = load_config(REPO / "config.example.yaml", env=env)
    fashion = config.accounts[0]
    assert {w.name: refresh_of(w, fashion.interval) for w in fashion.windows} == {
        "24h": 300,
        "30d": 3600,
    }
