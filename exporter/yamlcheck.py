"""Checking a YAML settings file: every problem found, each named by its path, in one error.

The exporter's configuration (``config.py``) and the web configuration (``webconfig.py``) are
both YAML files checked this way: read the file (syntax errors by line and column), refuse
values no setting needs, check each mapping's keys (a "did you mean" hint for typos), and
check the typed values settings hold (Prometheus-style durations, bounded integers).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (("w", 604800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_FORMAT_UNITS = _UNITS[1:]  # like Prometheus, never print weeks: 30d stays 30d
_MAX_DEPTH = 32
_MAX_INT_BITS = 3322  # 1000 decimal digits


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


class Problems:
    """Collects problems so the user sees all of them at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        """Record ``message`` about the value at ``path`` (empty: the document itself)."""
        self.items.append(f"{path}: {message}" if path else message)


def kind(value: Any) -> str:
    """What a YAML value is, in words, for messages that must not echo the value itself."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def mapping(
    value: Any,
    path: str,
    problems: Problems,
    allowed: set[str],
    *,
    top_level: str = "",
    not_supported: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The known keys of a mapping (null: empty); every other key is a problem.

    ``top_level`` names the document itself when it is not a mapping; ``not_supported`` maps
    the paths of recognised but unimplemented options to an explanation of the refusal.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path or top_level, f"must be a mapping, got {kind(value)}")
        return {}
    for key in value:
        if key in allowed:
            continue
        where = f"{path}.{key}" if path else str(key)
        if not_supported is not None and where in not_supported:
            problems.add(where, f"is not supported by retargeting-exporter{not_supported[where]}")
            continue
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
        problems.add(where, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return {k: v for k, v in value.items() if k in allowed}


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


def duration(
    raw: dict[str, Any], key: str, path: str, problems: Problems, default: float, minimum: float
) -> float:
    """``raw[key]`` as seconds: a duration such as ``5m`` or a number; ``default`` if absent."""
    if key not in raw:
        return default
    value = raw[key]
    where = f"{path}.{key}" if path else key
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.add(where, f"must be a duration such as 30s or 5m, got {kind(value)}")
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


def integer(
    raw: dict[str, Any], key: str, path: str, problems: Problems, default: int, lo: int, hi: int
) -> int:
    """``raw[key]`` as an integer from ``lo`` to ``hi``; ``default`` if absent."""
    if key not in raw:
        return default
    value = raw[key]
    where = f"{path}.{key}" if path else key
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.add(where, f"must be an integer from {lo} to {hi}, got {value!r}")
        return default
    return value


def unreadable(
    value: Any, path: str = "", depth: int = 0, seen: set[int] | None = None
) -> Iterator[str]:
    """Values no setting needs that would crash the checks: integers too long for ``str()``
    (Python refuses beyond 4300 digits) and nesting deep enough to exhaust ``repr()``'s stack.
    """
    seen = set() if seen is None else seen
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
            yield from unreadable(item, f"{path}[{i}]", depth + 1, seen)
        return
    for key, item in value.items():
        if isinstance(key, int) and key.bit_length() > _MAX_INT_BITS:
            yield f"{where}: a key is a number with more than 1000 digits"
            continue
        yield from unreadable(item, f"{path}.{key}" if path else str(key), depth + 1, seen)


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
