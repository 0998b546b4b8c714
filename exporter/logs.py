"""Log formatting (logfmt or JSON), configured once, with every known rest key scrubbed."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
REDACTED = "<redacted>"


class Redactor:
    """Replaces every known secret in text; the last line of defence for log output.

    With thousands of accounts, searching a line for each key in turn would cost more than
    everything else the exporter does; instead each position of the line is looked up in a set,
    once per distinct key length, so a line costs the same with 10 keys or 10,000.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # The keys and their lengths, replaced together by one assignment: a reload updates
        # them in the config thread while other threads log.
        self._known: tuple[frozenset[str], tuple[int, ...]] = (frozenset(), ())
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        known = frozenset(s for s in secrets if s)
        # Longest first, so a key that contains another is replaced whole.
        self._known = (known, tuple(sorted({len(s) for s in known}, reverse=True)))

    def scrub(self, text: str) -> str:
        secrets, lengths = self._known
        if not lengths or len(text) < lengths[-1]:
            return text
        parts: list[str] = []
        start = i = 0
        end = len(text) - lengths[-1]
        while i <= end:
            for length in lengths:
                if text[i : i + length] in secrets:
                    parts.append(text[start:i])
                    parts.append(REDACTED)
                    i = start = i + length
                    break
            else:
                i += 1
        if not parts:
            return text
        parts.append(text[start:])
        return "".join(parts)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())
        return self._redactor.scrub(line)


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.scrub(json.dumps(_fields(record), default=str, ensure_ascii=False))


def configure(
    level: str, fmt: str, redactor: Redactor, stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to ``stream`` (stderr) in ``fmt``; replaces earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else LogfmtFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # aiohttp's access log says nothing useful per scrape; keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    return handler
