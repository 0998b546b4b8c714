"""The output: OpenMetrics text with timestamps in promtool's layout, replaced atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from exporter.backfill.plan import Result
from exporter.metrics import TRAFFIC_FIELDS, escape, number
from exporter.traffic import TrafficRow


def render_openmetrics(results: Iterable[Result], extra_labels: Mapping[str, str]) -> str:
    """OpenMetrics text with timestamps (seconds), ending in ``# EOF``.

    Each family's samples are contiguous, each series' samples together and in time order: the
    layout OpenMetrics requires and ``promtool tsdb create-blocks-from openmetrics`` needs.
    """
    series: dict[tuple[str, str, str], list[tuple[int, TrafficRow]]] = {}
    for result in results:
        for row in result.rows or ():
            key = (result.point.account, row.source_name, result.point.window)
            series.setdefault(key, []).append((result.point.step, row))
    extra = "".join(f',{k}="{escape(v)}"' for k, v in sorted(extra_labels.items()))
    out: list[str] = []
    for family, value in TRAFFIC_FIELDS:
        if not series:
            break
        out.append(f"# HELP {family.name} {family.help}.\n# TYPE {family.name} gauge\n")
        for (account, source, window), samples in sorted(series.items()):
            labels = (
                f'{{account="{escape(account)}",source_name="{escape(source)}",'
                f'window="{escape(window)}"{extra}}}'
            )
            out.extend(
                f"{family.name}{labels} {number(value(row))} {step}\n"
                for step, row in sorted(samples, key=lambda s: s[0])
            )
    out.append("# EOF\n")
    return "".join(out)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (or promtool) sees the old file or the whole new one, never a half-written one.
    """
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
