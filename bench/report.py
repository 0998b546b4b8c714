"""The results as the Markdown tables of docs/benchmarks.md: one column per run, then the target.

Rows appear when the run measured them: the steady phase's only with ``--steady-intervals``,
the unchanged scrapes' only with ``--scrapes``.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

from bench.harness import REPO, Result, Steady, Timings


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


def _us(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e6:.0f} µs"


def _pct(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{share:.1%}"


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _timings(t: Timings) -> str:
    return f"{_ms(t.median)} / {_ms(t.p99)}"


def _ratio(r: Result) -> str:
    return "n/a" if math.isnan(r.cycle) else f"{_s(r.cycle)} = {r.ratio:.2f}x"


def _cycle_cpu(r: Result) -> str:
    return f"{_s(r.cycle_cpu)} ({_us(r.cycle_cpu / r.requests)} per request)"


def _steady(cell: Callable[[Steady], str]) -> Callable[[Result], str]:
    return lambda r: "n/a" if r.steady is None else cell(r.steady)


def _traffic_rate(s: Steady) -> str:
    t = s.traffic
    if t is None:
        return "n/a"
    return f"{t.mean_rate:.1f} / {t.peak_rate} ({t.burst_ratio:.2f}x)"


def _polls(s: Steady) -> str:
    t = s.traffic
    if t is None:
        return "n/a"
    return " / ".join(f"{t.polls_per_interval[b]:,}" for b in ("0", "1", "2+"))


def _gaps(s: Steady) -> str:
    t = s.traffic
    return "n/a" if t is None else " / ".join(_s(g) for g in t.gaps)


def _phase(s: Steady) -> str:
    t = s.traffic
    return "n/a" if t is None else f"{t.seconds:.0f} s, {t.requests:,} requests ({t.failed} failed)"


# (name, cell, when): ``when`` says whether a run measured the row at all.
Row = tuple[str, Callable[[Result], str], Callable[[Result], bool]]
_ALWAYS: Callable[[Result], bool] = lambda r: True  # noqa: E731
_UNCHANGED: Callable[[Result], bool] = lambda r: r.settings.scrapes > 0  # noqa: E731
_STEADY: Callable[[Result], bool] = lambda r: r.steady is not None  # noqa: E731

ROWS: tuple[Row, ...] = (
    ("bound N·W·L/C", lambda r: _s(r.settings.bound), _ALWAYS),
    ("start-up cycle (in the exporter) ÷ bound", _ratio, _ALWAYS),
    ("start-up cycle, min - max over the runs", lambda r: " - ".join(
        _s(c) for c in (min(r.cycles), max(r.cycles))
    ) if len(r.cycles) > 1 else "one run", _ALWAYS),
    ("start-up cycle, healthy → ready (outside)", lambda r: _s(r.cycle_outside), _ALWAYS),
    ("accounts polled at start-up (failed attempts)", lambda r: (
        f"{r.accounts_polled:,} of {r.settings.accounts:,} ({r.failed_attempts})"
    ), _ALWAYS),
    ("exporter CPU in the start-up cycle", _cycle_cpu, _ALWAYS),
    ("fake API / other processes' CPU in the start-up cycle", lambda r: (
        f"{_s(r.fake_cpu)} / {_s(r.other_cpu)}"
    ), _ALWAYS),
    ("max event-loop lag in the start-up cycle", lambda r: _ms(r.lag_polling), _ALWAYS),
    ("/metrics gzip median during the start-up cycle", lambda r: (
        _ms(r.scrape_during_poll.median)
    ), _ALWAYS),
    ("samples in /metrics", lambda r: f"{r.samples:,}", _UNCHANGED),
    ("/metrics body, raw / gzip", lambda r: (
        f"{_size(r.scrape_raw.size)} / {_size(r.scrape_gzip.size)}"
    ), _UNCHANGED),
    ("/metrics median / p99, raw, nothing changed", lambda r: _timings(r.scrape_raw), _UNCHANGED),
    ("/metrics median / p99, gzip, nothing changed", lambda r: (
        _timings(r.scrape_gzip)
    ), _UNCHANGED),
    ("max event-loop lag while scraping", lambda r: _ms(r.lag_scraping), _UNCHANGED),
    ("steady phase", _steady(_phase), _STEADY),
    ("requests/s at the vendor: mean / busiest second", _steady(_traffic_rate), _STEADY),
    ("account-intervals polled 0 / 1 / 2+ times", _steady(_polls), _STEADY),
    ("time between an account's polls: min / median / max", _steady(_gaps), _STEADY),
    ("exporter CPU, share of one core", _steady(lambda s: _pct(s.cpu)), _STEADY),
    ("exporter CPU per API request", _steady(lambda s: _us(s.cpu_per_request)), _STEADY),
    ("fake API CPU, share of one core", _steady(lambda s: _pct(s.fake_cpu)), _STEADY),
    ("exporter RSS, steady (median)", _steady(lambda s: _mb(s.rss)), _STEADY),
    ("/metrics gzip median / p99, accounts changing", _steady(
        lambda s: _timings(s.scrape_gzip)
    ), _STEADY),
    ("max event-loop lag, steady", _steady(lambda s: _ms(s.lag)), _STEADY),
    ("peak RSS", lambda r: _mb(r.peak_rss), _ALWAYS),
)  # fmt: skip


def table(results: Sequence[Result], targets: Mapping[str, str], title: str) -> str:
    """A Markdown table: a row per figure, a column per result, then the row's target."""
    rows = [row for row in ROWS if any(row[2](r) for r in results)]
    header = f"| {title} | " + " | ".join(r.settings.event_loop for r in results) + " | target |"
    lines = [header, "| --- |" + " ---: |" * len(results) + " --- |"]
    for name, cell, _ in rows:
        cells = " | ".join(cell(r) for r in results)
        lines.append(f"| {name} | {cells} | {targets.get(name, '')} |")
    return "\n".join(lines)


def commit() -> str:
    """The checked-out commit, ``-dirty`` when the work tree has changes."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return run.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def load() -> str:
    """The machine's 1-minute load average, and how many cores share it."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
