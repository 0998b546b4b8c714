"""Turn the YAML configuration into frozen dataclasses, reporting every problem with its path."""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from exporter import __version__

DEFAULT_API_URL = "https://api.retargeting.app/v1/partners-api/traffic-source"
DEFAULT_USER_AGENT = f"retargeting-exporter/{__version__}"
MAX_WINDOW_SECONDS = 30 * 86400
MIN_WINDOW_SECONDS = 3600
MIN_INTERVAL_SECONDS = 30.0
DEFAULT_MAX_SOURCES = 16
DEFAULT_TIMEZONE = "UTC"
# Calendar-day windows: their length varies (23 h, 24 h or 25 h around DST changes).
CALENDAR_WINDOWS = ("today", "yesterday")

# Labels the exporter sets itself; configured account labels must not shadow them.
RESERVED_LABELS = frozenset(
    {"account", "source_name", "window", "reason", "job", "instance", "le", "quantile"}
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (("w", 604800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_FORMAT_UNITS = _UNITS[1:]  # like Prometheus, never print weeks: 30d stays 30d


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the API URL (None: it can)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be http:// or https:// with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if not url.isascii() or any(c.isspace() for c in url):
        return "must be ASCII without spaces (percent-encode the rest)"
    return None


def user_agent_problem(user_agent: str) -> str | None:
    """Why ``user_agent`` cannot be sent as a header (None: it can)."""
    if not user_agent.isprintable():
        return "must be printable text on one line"
    return None


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


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


def parse_duration(text: str) -> float:
    """Parse a Prometheus-style duration (``90s``, ``5m``, ``1h30m``, ``30d``) into seconds."""
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 5m, 1h30m, 7d)")
    seconds = sum(float(n) * mult for n, (_, mult) in zip(match.groups(), _UNITS, strict=True) if n)
    if not math.isfinite(seconds):
        raise ValueError(f"{text[:20]!r}… is too long to be a duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Canonical Prometheus-style form: ``86400`` → ``1d``, ``5400`` → ``1h30m``."""
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    parts = []
    for unit, mult in _FORMAT_UNITS:
        size = round(mult * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True)
class Window:
    """A time window ending at the poll time (shifted back by ``end_offset``).

    Either rolling (``24h``: the last ``seconds`` seconds) or a calendar day in ``timezone``
    (``today``: since local midnight; ``yesterday``: the last complete local day).
    """

    name: str
    seconds: int  # length of a rolling window; 0 for a calendar day
    timezone: str = DEFAULT_TIMEZONE  # IANA name; used by calendar days only

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

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every configured account label name, sorted (the extra labels of ``account_info``)."""
        return tuple(sorted({k for a in self.accounts for k in a.labels}))


class _Problems:
    """Collects problems so the user sees all of them at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


_TOP_KEYS = {"api", "polling", "windows", "accounts", "max_sources_per_account", "timezone"}
_API_KEYS = {"url", "timeout", "max_concurrency", "user_agent", "retries"}
_RETRY_KEYS = {"attempts", "initial_backoff", "max_backoff"}
_POLLING_KEYS = {"interval", "jitter", "stale_after", "end_offset"}
_ACCOUNT_KEYS = {
    "name", "rest_key_env", "rest_key_file", "rest_key", "labels", "windows", "interval",
    "stale_after", "timezone",
}  # fmt: skip
_KEY_FIELDS = ("rest_key_env", "rest_key_file", "rest_key")


def _mapping(value: Any, path: str, problems: _Problems, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, got {_kind(value)}")
        return {}
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            hint = _closest(str(key), allowed)
            problems.add(where, "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))
    return {k: v for k, v in value.items() if k in allowed}


def _closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _duration(
    raw: dict[str, Any], key: str, path: str, problems: _Problems, default: float, minimum: float
) -> float:
    if key not in raw:
        return default
    value = raw[key]
    where = f"{path}.{key}" if path else key
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.add(where, f"must be a duration such as 30s or 5m, got {_kind(value)}")
        return default
    try:
        seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
    except (ValueError, OverflowError) as exc:
        problems.add(where, str(exc) if isinstance(exc, ValueError) else "is too large")
        return default
    if not math.isfinite(seconds):  # YAML's .nan and .inf are floats
        problems.add(where, f"must be a finite duration such as 30s or 5m, got {value}")
        return default
    if seconds < minimum:
        problems.add(where, f"must be at least {format_duration(minimum)}, got {value}")
        return default
    return seconds


def _integer(
    raw: dict[str, Any], key: str, path: str, problems: _Problems, default: int, lo: int, hi: int
) -> int:
    if key not in raw:
        return default
    value = raw[key]
    where = f"{path}.{key}"
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.add(where, f"must be an integer from {lo} to {hi}, got {value!r}")
        return default
    return value


def _windows(value: Any, path: str, problems: _Problems) -> tuple[Window, ...] | None:
    if not isinstance(value, list) or not value:
        problems.add(path, "must be a non-empty list of durations such as [24h, 30d]")
        return None
    windows: list[Window] = []
    for i, item in enumerate(value):
        try:
            window = Window.parse(str(item))
        except ValueError as exc:
            problems.add(f"{path}[{i}]", str(exc))
            continue
        if any(w.same_as(window) for w in windows):
            problems.add(f"{path}[{i}]", f"window {window.name} is listed twice")
            continue
        windows.append(window)
    return tuple(windows)


def _timezone(raw: dict[str, Any], path: str, problems: _Problems, default: str) -> str:
    """An IANA time zone name such as Europe/Bucharest (checked against the zone database)."""
    if "timezone" not in raw:
        return default
    value = raw["timezone"]
    where = f"{path}.timezone" if path else "timezone"
    if not isinstance(value, str) or not value.strip():
        problems.add(
            where,
            f"must be an IANA time zone name such as Europe/Bucharest or UTC, got {_kind(value)}",
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


def with_timezone(windows: tuple[Window, ...], timezone: str) -> tuple[Window, ...]:
    """The windows, their calendar days set in ``timezone`` (rolling windows unchanged)."""
    return tuple(replace(w, timezone=timezone) if w.calendar else w for w in windows)


def _parse_api(value: Any, problems: _Problems) -> ApiConfig:
    raw = _mapping(value, "api", problems, _API_KEYS)
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
    retries_raw = _mapping(raw.get("retries"), "api.retries", problems, _RETRY_KEYS)
    retries = RetryConfig(
        attempts=_integer(retries_raw, "attempts", "api.retries", problems, 3, 1, 10),
        initial_backoff=_duration(retries_raw, "initial_backoff", "api.retries", problems, 1, 0),
        max_backoff=_duration(retries_raw, "max_backoff", "api.retries", problems, 30, 0),
    )
    return ApiConfig(
        url=url,
        timeout=_duration(raw, "timeout", "api", problems, 15.0, 0.1),
        max_concurrency=_integer(raw, "max_concurrency", "api", problems, 8, 1, 10000),
        user_agent=user_agent,
        retries=retries,
    )


def _parse_polling(value: Any, problems: _Problems) -> tuple[PollingConfig, bool]:
    raw = _mapping(value, "polling", problems, _POLLING_KEYS)
    interval = _duration(raw, "interval", "polling", problems, 300.0, MIN_INTERVAL_SECONDS)
    jitter = _duration(raw, "jitter", "polling", problems, 0.0, 0.0)
    if jitter > interval / 2:
        problems.add("polling.jitter", "must be at most half of polling.interval")
    stale_after = _duration(raw, "stale_after", "polling", problems, 3 * interval, 0.0)
    if "stale_after" in raw and stale_after < interval:
        problems.add("polling.stale_after", "must be at least polling.interval")
    end_offset = _duration(raw, "end_offset", "polling", problems, 0.0, 0.0)
    if end_offset > 86400:
        problems.add("polling.end_offset", "must be at most 1d")
    return PollingConfig(interval, jitter, stale_after, end_offset), "stale_after" in raw


def _read_key(
    raw: dict[str, Any], path: str, env: Mapping[str, str], base: Path, problems: _Problems
) -> tuple[RestKey | None, str]:
    """The key and a description of where it came from that is safe to print."""
    given = [k for k in _KEY_FIELDS if k in raw]
    if len(given) != 1:
        detail = "none is set" if not given else f"{' and '.join(given)} are all set"
        problems.add(path, f"needs exactly one of rest_key_env, rest_key_file, rest_key ({detail})")
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
        problems.add(f"{path}.rest_key_file", problem)
        return None, ""
    if not secret:
        problems.add(f"{path}.rest_key_file", f"{key_path} is empty")
        return None, ""
    return RestKey(secret), f"file {key_path}"


_MAX_DEPTH = 32
_MAX_INT_BITS = 3322  # 1000 decimal digits


def _unreadable(value: Any, path: str, depth: int, seen: set[int]) -> Iterator[str]:
    """Values no config needs that would crash the checks: integers too long for ``str()``
    (Python refuses beyond 4300 digits) and nesting deep enough to exhaust ``repr()``'s stack.
    """
    where = path or "top level"
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_INT_BITS:
            yield f"{where}: number with more than 1000 digits"
        return
    if not isinstance(value, dict | list) or id(value) in seen:
        return  # a YAML alias may make a structure contain itself: walk it once
    if depth >= _MAX_DEPTH:
        yield f"{where}: nested more than {_MAX_DEPTH} levels deep"
        return
    seen.add(id(value))
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _unreadable(item, f"{path}[{i}]", depth + 1, seen)
        return
    for key, item in value.items():
        if isinstance(key, int) and key.bit_length() > _MAX_INT_BITS:
            yield f"{where}: a key is a number with more than 1000 digits"
            continue
        yield from _unreadable(item, f"{path}.{key}" if path else str(key), depth + 1, seen)


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
    unreadable = list(_unreadable(data, "", 0, set()))
    if unreadable:  # the checks below could not even print these values
        raise ConfigError(source, unreadable)
    problems = _Problems()
    if data is None:
        data = {}
    top = _mapping(data, "", problems, _TOP_KEYS)
    if not isinstance(data, dict):
        raise ConfigError(source, problems.items)
    api = _parse_api(top.get("api"), problems)
    polling, explicit_stale = _parse_polling(top.get("polling"), problems)
    timezone = _timezone(top, "", problems, DEFAULT_TIMEZONE)
    windows: tuple[Window, ...] = (Window.parse("24h"), Window.parse("30d"))
    if "windows" in top:
        windows = _windows(top["windows"], "windows", problems) or windows
    max_sources = _integer(
        top, "max_sources_per_account", "", problems, DEFAULT_MAX_SOURCES, 1, 100
    )

    accounts: list[AccountConfig] = []
    raw_accounts = top.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        problems.add("accounts", "must be a non-empty list of accounts")
        raw_accounts = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_accounts):
        path = f"accounts[{i}]"
        if not isinstance(item, dict):
            problems.add(
                path, f"must be a mapping with at least name and rest_key_env, got {_kind(item)}"
            )
            continue
        account = _parse_account(
            item, path, polling, explicit_stale, windows, timezone, env, base, problems
        )
        if account is None:
            continue
        if account.name in seen:
            problems.add(
                f"{path}.name",
                f"{account.name!r} is already used by accounts[{seen[account.name]}]",
            )
            continue
        seen[account.name] = i
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
        warnings=tuple(_literal_key_warnings(raw_accounts, source)),
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
    problems: _Problems,
) -> AccountConfig | None:
    before = len(problems.items)
    raw = _mapping(item, path, problems, _ACCOUNT_KEYS)
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
            f"{path}.labels", f"must be a mapping of label names to values, got {_kind(raw_labels)}"
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
        account_windows = _windows(raw["windows"], f"{path}.windows", problems) or windows
    timezone = _timezone(raw, path, problems, default_timezone)
    interval = _duration(raw, "interval", path, problems, polling.interval, MIN_INTERVAL_SECONDS)
    default_stale = polling.stale_after if explicit_stale else 3 * interval
    stale_after = _duration(raw, "stale_after", path, problems, default_stale, 0.0)
    if stale_after < interval:
        problems.add(f"{path}.stale_after", "must be at least the account's polling interval")
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
    )


def _literal_key_warnings(raw_accounts: list[Any], source: str) -> Iterator[str]:
    """Like ssh: a literal key in a file other users can read deserves a warning."""
    literal = [str(a.get("name")) for a in raw_accounts if isinstance(a, dict) and "rest_key" in a]
    if not literal:
        return
    try:
        mode = Path(source).stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o044:
        yield (
            f"{source} is readable by other users (mode {mode:o}) and holds a literal rest_key "
            f"for account(s) {', '.join(literal)}: use rest_key_env or rest_key_file, "
            f"or chmod 600 {source}"
        )


def read_yaml_file(path: Path) -> tuple[bytes, Any]:
    """The raw bytes and the parsed YAML of a file; ``ConfigError`` naming the file if not."""
    source = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(source, [f"cannot read the file: {reason}"]) from None
    try:
        return raw, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, [f"{where}{problem}"]) from None
    except (ValueError, OverflowError) as exc:  # a value YAML recognised but cannot build
        problem = "a number is too long" if "digits" in str(exc) else str(exc)
        raise ConfigError(source, [f"invalid value in the YAML: {problem}"]) from None
    except RecursionError:  # [[[[… deeper than the parser's stack
        raise ConfigError(source, ["invalid YAML: nested too deeply"]) from None


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ``ConfigError`` naming the file and every problem."""
    path = Path(path)
    _, data = read_yaml_file(path)
    return parse_config(data, source=str(path), env=env, base_dir=path.parent)
