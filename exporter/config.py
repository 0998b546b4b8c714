"""Turn the YAML configuration into frozen dataclasses, reporting every problem with its path."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter import __version__
from exporter.apiurls import ProxyUrl, proxy_secrets, url_problem, user_agent_problem
from exporter.window import DEFAULT_TIMEZONE, Window, with_timezone
from exporter.windowlist import check_refreshes, parse_windows
from exporter.yamlcheck import (
    ConfigError,
    Problems,
    duration,
    integer,
    kind,
    mapping,
    read_yaml_file,
    unreadable,
)

DEFAULT_API_URL = "https://api.retargeting.app/v1/partners-api/traffic-source"
DEFAULT_USER_AGENT = f"retargeting-exporter/{__version__}"
MIN_INTERVAL_SECONDS = 30.0
DEFAULT_MAX_SOURCES = 16

# Labels the exporter sets itself; configured account labels must not shadow them.
RESERVED_LABELS = frozenset(
    {"account", "source_name", "window", "reason", "job", "instance", "le", "quantile", "currency"}
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class RestKey:
    """An account's REST API key. Its ``repr``/``str`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that builds the request."""
        return self._value

    def __repr__(self) -> str:
        return "RestKey('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 3
    initial_backoff: float = 1.0
    max_backoff: float = 30.0


@dataclass(frozen=True)
class ApiConfig:
    url: str = DEFAULT_API_URL
    timeout: float = 15.0
    max_concurrency: int = 8
    user_agent: str = DEFAULT_USER_AGENT
    retries: RetryConfig = field(default_factory=RetryConfig)
    # Overrides HTTPS_PROXY / HTTP_PROXY / NO_PROXY; None: the environment decides.
    proxy_url: ProxyUrl | None = None


@dataclass(frozen=True)
class PollingConfig:
    interval: float = 300.0
    jitter: float = 0.0
    stale_after: float = 900.0
    end_offset: float = 0.0


@dataclass(frozen=True)
class AccountConfig:
    """One Retargeting account: where its key comes from, and how it is polled."""

    name: str
    rest_key: RestKey
    key_source: str  # "env SHOP_KEY", "file /run/keys/shop", "literal": safe to print
    labels: Mapping[str, str]
    windows: tuple[Window, ...]
    interval: float
    stale_after: float
    timezone: str = DEFAULT_TIMEZONE  # of the calendar-day windows
    currency: str = ""  # ISO 4217 code of the revenue; "" when not configured
    key_file: str = ""  # the rest_key_file read, if the key came from one (watched for changes)


@dataclass(frozen=True)
class AccountDefaults:
    """What an account inherits from the main file: polling, windows, time zone."""

    polling: PollingConfig = field(default_factory=PollingConfig)
    explicit_stale: bool = False  # polling.stale_after was given (else 3 x each interval)
    windows: tuple[Window, ...] = ()
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class Config:
    api: ApiConfig
    polling: PollingConfig
    windows: tuple[Window, ...]
    accounts: tuple[AccountConfig, ...]
    max_sources_per_account: int = DEFAULT_MAX_SOURCES
    source: str = "<memory>"
    timezone: str = DEFAULT_TIMEZONE
    warnings: tuple[str, ...] = ()
    account_files: tuple[str, ...] = ()  # glob patterns, relative to the config file's folder
    defaults: AccountDefaults = field(default_factory=AccountDefaults)

    def secrets(self) -> list[str]:
        """Every secret the log redactor must hide: the rest keys and the proxy password."""
        keys = [a.rest_key.reveal() for a in self.accounts]
        return keys + (proxy_secrets(self.api.proxy_url) if self.api.proxy_url else [])


_TOP_KEYS = {
    "api", "polling", "windows", "accounts", "account_files", "max_sources_per_account", "timezone",
}  # fmt: skip
_API_KEYS = {"url", "timeout", "max_concurrency", "user_agent", "retries", "proxy_url"}
_RETRY_KEYS = {"attempts", "initial_backoff", "max_backoff"}
_POLLING_KEYS = {"interval", "jitter", "stale_after", "end_offset"}
_ACCOUNT_KEYS = {
    "name", "rest_key_env", "rest_key_file", "rest_key_credential", "rest_key", "labels",
    "windows", "interval", "stale_after", "timezone", "currency",
}  # fmt: skip
# A systemd credential is read from $CREDENTIALS_DIRECTORY/<name>, set only under systemd.
_NO_CREDENTIALS = (
    "needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential=; "
    "outside systemd use rest_key_file"
)
_KEY_FIELDS = ("rest_key_env", "rest_key_file", "rest_key_credential", "rest_key")


def _timezone(raw: dict[str, Any], path: str, problems: Problems, default: str) -> str:
    """An IANA time zone name such as Europe/Bucharest (checked against the zone database)."""
    if "timezone" not in raw:
        return default
    value = raw["timezone"]
    where = f"{path}.timezone" if path else "timezone"
    if not isinstance(value, str) or not value.strip():
        problems.add(
            where,
            f"must be an IANA time zone name such as Europe/Bucharest or UTC, got {kind(value)}",
        )
        return default
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.add(
            where,
            f"unknown time zone {name!r} (use an IANA name such as Europe/Bucharest, "
            "America/New_York or UTC; names are case-sensitive)",
        )
        return default
    return name


def _parse_api(value: Any, problems: Problems) -> ApiConfig:
    raw = mapping(value, "api", problems, _API_KEYS)
    url = raw.get("url", DEFAULT_API_URL)
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s?#]+", url):
        problems.add("api.url", f"must be an http(s) URL, got {url!r}")
        url = DEFAULT_API_URL
    elif "rest_key" in url:
        problems.add("api.url", "must not contain the rest key; give keys per account")
    elif (problem := url_problem(url)) is not None:
        problems.add("api.url", problem)  # not echoed: it may hold a password
        url = DEFAULT_API_URL
    user_agent = raw.get("user_agent", DEFAULT_USER_AGENT)
    if not isinstance(user_agent, str) or not user_agent.strip():
        problems.add("api.user_agent", "must be a non-empty string")
        user_agent = DEFAULT_USER_AGENT
    elif (problem := user_agent_problem(user_agent)) is not None:
        problems.add("api.user_agent", problem)
        user_agent = DEFAULT_USER_AGENT
    retries_raw = mapping(raw.get("retries"), "api.retries", problems, _RETRY_KEYS)
    retries = RetryConfig(
        attempts=integer(retries_raw, "attempts", "api.retries", problems, 3, 1, 10),
        initial_backoff=duration(retries_raw, "initial_backoff", "api.retries", problems, 1, 0),
        max_backoff=duration(retries_raw, "max_backoff", "api.retries", problems, 30, 0),
    )
    return ApiConfig(
        url=url,
        timeout=duration(raw, "timeout", "api", problems, 15.0, 0.1),
        max_concurrency=integer(raw, "max_concurrency", "api", problems, 8, 1, 10000),
        user_agent=user_agent,
        retries=retries,
        proxy_url=_proxy_url(raw, problems),
    )


def _proxy_url(raw: dict[str, Any], problems: Problems) -> ProxyUrl | None:
    value = raw.get("proxy_url")
    if value is None:
        return None
    if not isinstance(value, str):
        example = "http://proxy.example:3128"
        problems.add(
            "api.proxy_url", f"must be an http:// URL such as {example}, got {kind(value)}"
        )
        return None
    try:
        return ProxyUrl.parse(value)
    except ValueError as exc:
        problems.add("api.proxy_url", str(exc))  # built from fixed texts only, never the URL
        return None


def _parse_polling(value: Any, problems: Problems) -> tuple[PollingConfig, bool]:
    raw = mapping(value, "polling", problems, _POLLING_KEYS)
    interval = duration(raw, "interval", "polling", problems, 300.0, MIN_INTERVAL_SECONDS)
    jitter = duration(raw, "jitter", "polling", problems, 0.0, 0.0)
    if jitter > interval / 2:
        problems.add("polling.jitter", "must be at most half of polling.interval")
    stale_after = duration(raw, "stale_after", "polling", problems, 3 * interval, 0.0)
    if "stale_after" in raw and stale_after < interval:
        problems.add("polling.stale_after", "must be at least polling.interval")
    end_offset = duration(raw, "end_offset", "polling", problems, 0.0, 0.0)
    if end_offset > 86400:
        problems.add("polling.end_offset", "must be at most 1d")
    return PollingConfig(interval, jitter, stale_after, end_offset), "stale_after" in raw


def _read_key(
    raw: dict[str, Any], path: str, env: Mapping[str, str], base: Path, problems: Problems
) -> tuple[RestKey | None, str]:
    """The key and a description of where it came from that is safe to print."""
    given = [k for k in _KEY_FIELDS if k in raw]
    if len(given) != 1:
        detail = "none is set" if not given else f"{' and '.join(given)} are all set"
        problems.add(path, f"needs exactly one of {', '.join(_KEY_FIELDS)} ({detail})")
        return None, ""
    kind = given[0]
    value = raw[kind]
    if kind == "rest_key":
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            problems.add(f"{path}.rest_key", "must be a non-empty string or number")
            return None, ""
        return RestKey(str(value).strip()), "literal"
    if not isinstance(value, str) or not value:
        problems.add(f"{path}.{kind}", "must be a non-empty string")
        return None, ""
    if kind == "rest_key_env":
        secret = env.get(value, "")
        if not secret.strip():
            state = "is empty" if value in env else "is not set"
            problems.add(f"{path}.rest_key_env", f"environment variable {value} {state}")
            return None, ""
        return RestKey(secret.strip()), f"env {value}"
    if kind == "rest_key_credential":  # systemd's LoadCredential=: a name, not a path
        directory = env.get("CREDENTIALS_DIRECTORY", "")
        if not directory or "/" in value or value in (".", ".."):
            problem = "is not a credential name" if directory else _NO_CREDENTIALS
            problems.add(f"{path}.rest_key_credential", problem)
            return None, ""
        key_path = Path(directory) / value
    else:
        key_path = Path(value) if Path(value).is_absolute() else base / value
    try:
        secret = key_path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, or a NUL byte in the path
        if isinstance(exc, OSError) and exc.strerror:
            problem = f"cannot read {key_path}: {exc.strerror}"
        elif isinstance(exc, UnicodeDecodeError):
            problem = f"cannot read {key_path}: not UTF-8 text"
        else:
            problem = "is not a valid path (it contains a NUL byte)"
        problems.add(f"{path}.{kind}", problem)
        return None, ""
    if not secret:
        problems.add(f"{path}.{kind}", f"{key_path} is empty")
        return None, ""
    if kind == "rest_key_credential":
        return RestKey(secret), f"credential {value}"
    return RestKey(secret), f"file {key_path}"


def account_path(prefix: str, index: int, item: Any) -> str:
    """Where an account is, for messages: ``accounts[2] (shop-garden)`` when it has a name."""
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name.strip() and len(name) <= 128 and name.isprintable():
        return f"{prefix}[{index}] ({name})"
    return f"{prefix}[{index}]"


def parse_account(
    item: Any,
    path: str,
    defaults: AccountDefaults,
    env: Mapping[str, str],
    base: Path,
    problems: Problems,
) -> AccountConfig | None:
    """One entry of ``accounts`` (or of an account file); None, with its problems, if bad."""
    if not isinstance(item, dict):
        problems.add(
            path, f"must be a mapping with at least name and rest_key_env, got {kind(item)}"
        )
        return None
    return _parse_account(
        item, path, defaults.polling, defaults.explicit_stale, defaults.windows,
        defaults.timezone, env, base, problems,
    )  # fmt: skip


def _account_files(top: dict[str, Any], problems: Problems) -> tuple[str, ...]:
    value = top.get("account_files", [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        problems.add(
            "account_files", "must be a list of file name patterns such as accounts.d/*.yaml"
        )
        return ()
    return tuple(value)


def parse_config(
    data: Any,
    *,
    source: str = "<memory>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate already-loaded YAML data. Raises ``ConfigError`` listing every problem."""
    env = os.environ if env is None else env
    base = base_dir or Path.cwd()
    unreadable_values = list(unreadable(data))
    if unreadable_values:  # the checks below could not even print these values
        raise ConfigError(source, unreadable_values)
    problems = Problems()
    if data is None:
        data = {}
    top = mapping(data, "", problems, _TOP_KEYS)
    if not isinstance(data, dict):
        raise ConfigError(source, problems.items)
    api = _parse_api(top.get("api"), problems)
    polling, explicit_stale = _parse_polling(top.get("polling"), problems)
    timezone = _timezone(top, "", problems, DEFAULT_TIMEZONE)
    windows: tuple[Window, ...] = (Window.parse("24h"), Window.parse("30d"))
    if "windows" in top:
        windows = parse_windows(top["windows"], "windows", problems) or windows
        check_refreshes(windows, "windows", polling.interval, polling.stale_after, problems)
    max_sources = integer(top, "max_sources_per_account", "", problems, DEFAULT_MAX_SOURCES, 1, 100)

    account_files = _account_files(top, problems)
    defaults = AccountDefaults(polling, explicit_stale, windows, timezone)
    accounts: list[AccountConfig] = []
    raw_accounts = top.get("accounts", [] if account_files else None)
    if not isinstance(raw_accounts, list) or not (raw_accounts or account_files):
        problems.add("accounts", "must be a non-empty list of accounts (or give account_files)")
        raw_accounts = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw_accounts):
        path = account_path("accounts", i, item)
        account = parse_account(item, path, defaults, env, base, problems)
        if account is None:
            continue
        if account.name in seen:
            problems.add(
                f"{path}.name", f"{account.name!r} is already used by {seen[account.name]}"
            )
            continue
        seen[account.name] = f"accounts[{i}]"
        accounts.append(account)
    if problems.items:
        raise ConfigError(source, problems.items)
    return Config(
        api=api,
        polling=polling,
        windows=with_timezone(windows, timezone),
        accounts=tuple(accounts),
        max_sources_per_account=max_sources,
        source=source,
        timezone=timezone,
        warnings=tuple(readable_secret_warnings(raw_accounts, api.proxy_url, source)),
        account_files=account_files,
        defaults=defaults,
    )


def _parse_account(
    item: dict[str, Any],
    path: str,
    polling: PollingConfig,
    explicit_stale: bool,
    windows: tuple[Window, ...],
    default_timezone: str,
    env: Mapping[str, str],
    base: Path,
    problems: Problems,
) -> AccountConfig | None:
    before = len(problems.items)
    raw = mapping(item, path, problems, _ACCOUNT_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(f"{path}.name", "must be a non-empty string")
        name = ""
    elif len(name) > 128 or any(ord(c) < 32 for c in name):
        problems.add(f"{path}.name", "must be at most 128 printable characters")
    key, key_source = _read_key(raw, path, env, base, problems)
    labels: dict[str, str] = {}
    raw_labels = raw.get("labels", {})
    if not isinstance(raw_labels, dict):
        problems.add(
            f"{path}.labels", f"must be a mapping of label names to values, got {kind(raw_labels)}"
        )
    else:
        for label, value in raw_labels.items():
            where = f"{path}.labels.{label}"
            if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
                problems.add(where, "is not a valid Prometheus label name")
            elif label in RESERVED_LABELS:
                problems.add(where, f"{label} is set by the exporter and cannot be configured")
            elif isinstance(value, dict | list) or value is None:
                problems.add(where, "must be a string")
            else:
                labels[label] = str(value).lower() if isinstance(value, bool) else str(value)
    account_windows = windows
    if "windows" in raw:
        account_windows = parse_windows(raw["windows"], f"{path}.windows", problems) or windows
    timezone = _timezone(raw, path, problems, default_timezone)
    interval = duration(raw, "interval", path, problems, polling.interval, MIN_INTERVAL_SECONDS)
    default_stale = polling.stale_after if explicit_stale else 3 * interval
    stale_after = duration(raw, "stale_after", path, problems, default_stale, 0.0)
    if stale_after < interval:
        problems.add(f"{path}.stale_after", "must be at least the account's polling interval")
    elif "windows" in raw:
        check_refreshes(account_windows, f"{path}.windows", interval, stale_after, problems)
    elif interval != polling.interval:  # the top-level list was checked at polling.interval
        check_refreshes(account_windows, "windows", interval, stale_after, problems, name)
    currency = raw.get("currency", "")
    if "currency" in raw and (not isinstance(currency, str) or not _CURRENCY.match(currency)):
        shown = repr(currency) if isinstance(currency, str) else kind(currency)
        problems.add(
            f"{path}.currency",
            f"must be an ISO 4217 code of three capital letters (RON, EUR, HUF), got {shown}",
        )
    if len(problems.items) != before or key is None:
        return None
    return AccountConfig(
        name=name,
        rest_key=key,
        key_source=key_source,
        labels=labels,
        windows=with_timezone(account_windows, timezone),
        interval=interval,
        stale_after=stale_after,
        timezone=timezone,
        currency=str(currency),
        key_file=key_source[len("file ") :] if key_source.startswith("file ") else "",
    )


def readable_secret_warnings(
    raw_accounts: list[Any], proxy: ProxyUrl | None, source: str
) -> Iterator[str]:
    """Like ssh: a secret written in a file other users can read deserves a warning (the main
    file, and each account file)."""
    literal = [str(a.get("name")) for a in raw_accounts if isinstance(a, dict) and "rest_key" in a]
    proxy_password = proxy is not None and bool(proxy.password)
    if not literal and not proxy_password:
        return
    try:
        mode = Path(source).stat().st_mode & 0o777
    except OSError:
        return
    if not mode & 0o044:
        return
    readable = f"{source} is readable by other users (mode {mode:o})"
    if literal:
        yield (
            f"{readable} and holds a literal rest_key for account(s) {', '.join(literal)}: "
            f"use rest_key_env or rest_key_file, or chmod 600 {source}"
        )
    if proxy_password:
        yield (
            f"{readable} and holds the proxy password in api.proxy_url: chmod 600 {source}, "
            "or leave api.proxy_url out and set HTTPS_PROXY in the exporter's environment"
        )


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ``ConfigError`` naming the file and every problem."""
    path = Path(path)
    _, data = read_yaml_file(path)
    return parse_config(data, source=str(path), env=env, base_dir=path.parent)
