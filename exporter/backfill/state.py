"""The state file: every answer appended as one JSON line as it arrives, read back by
``--resume``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from exporter.backfill.plan import Point, Result
from exporter.traffic import TrafficRow

log = logging.getLogger("exporter.backfill")  # one logger name for the whole command


def _result_to_json(result: Result) -> str:
    data: dict[str, Any] = {
        "account": result.point.account,
        "window": result.point.window,
        "step": result.point.step,
        "date_from": result.date_from,
        "date_to": result.date_to,
    }
    if result.rows is not None:
        data["rows"] = [row._asdict() for row in result.rows]
    else:
        data["error"] = result.reason
        data["message"] = result.message
    return json.dumps(data, separators=(",", ":"))


def _result_from_json(line: str) -> Result:
    data = json.loads(line)
    point = Point(str(data["account"]), str(data["window"]), int(data["step"]))
    rows = None
    if "rows" in data:
        rows = tuple(TrafficRow(**row) for row in data["rows"])
    return Result(
        point,
        int(data["date_from"]),
        int(data["date_to"]),
        rows,
        str(data.get("error", "")),
        str(data.get("message", "")),
    )


def read_state(path: Path) -> dict[Point, Result]:
    """The latest result of every point in the state file (a success outlives later failures)."""
    results: dict[Point, Result] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return results
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            result = _result_from_json(line)
        except (ValueError, KeyError, TypeError):
            bad += 1  # e.g. the last line of a run that was killed mid-write
            continue
        previous = results.get(result.point)
        if result.ok or previous is None or not previous.ok:
            results[result.point] = result
    if bad:
        log.warning("ignored unreadable lines in the state file", extra={"lines": bad})
    return results


class StateFile:
    """Appends each result as one JSON line, flushed at once: an interrupted run loses nothing."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self._path = path
        mode = "a" if resume else "w"
        self._file: IO[str] = path.open(mode, encoding="utf-8")
        if resume and self._file.tell() > 0:
            with path.open("rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":  # a torn last line: start on a fresh one
                    self._file.write("\n")

    def append(self, result: Result) -> None:
        self._file.write(_result_to_json(result) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
