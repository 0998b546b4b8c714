"""What the vendor saw: the fake's request records turned into polls, rates and per-interval counts.

Pure functions on ``(time, key, status)`` records (``python -m exporter.fakeapi --record``
writes them), so that the harness's verdicts ("every account polled once per interval", "no
bursts") can be tested on records made up for the purpose.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class Record(NamedTuple):
    time: float  # time.monotonic() when the request arrived
    key: str
    status: int


def read_records(paths: Iterable[Path]) -> list[Record]:
    """Every worker's records, in arrival order."""
    records = []
    for path in paths:
        for line in path.read_text().splitlines():
            when, key, status = line.split()
            records.append(Record(float(when), key, int(status)))
    records.sort()
    return records


def poll_starts(records: Iterable[Record], interval: float) -> dict[str, list[float]]:
    """Each account's polls, by the arrival of their first request.

    A poll's requests (one per window, and any retries) all come within half an interval of
    its first one (the poller gives up retrying by then); a request later than that starts the
    next poll.
    """
    starts: dict[str, list[float]] = defaultdict(list)
    for record in records:
        polls = starts[record.key]
        if not polls or record.time - polls[-1] > interval / 2:
            polls.append(record.time)
    return dict(starts)


@dataclass(frozen=True)
class SteadyTraffic:
    """The requests of a steady phase of ``intervals`` whole polling intervals."""

    seconds: float
    requests: int
    failed: int  # answers other than 200
    mean_rate: float  # requests per second over the phase
    peak_rate: int  # the busiest whole second
    polls_per_interval: dict[str, int]  # "0", "1", "2+": account-intervals with that many polls
    gaps: tuple[float, float, float]  # min, median, max seconds between an account's polls

    @property
    def burst_ratio(self) -> float:
        return self.peak_rate / self.mean_rate if self.mean_rate else math.nan


def steady_traffic(
    records: Sequence[Record],
    accounts: Iterable[str],
    start: float,
    interval: float,
    intervals: int,
) -> SteadyTraffic:
    """The phase ``[start, start + intervals * interval)``: rates, and per account and interval
    how many polls began in it (every account is expected exactly once in each)."""
    end = start + intervals * interval
    inside = [r for r in records if start <= r.time < end]
    per_second = Counter(int(r.time - start) for r in inside)
    seconds = end - start
    tally: Counter[str] = Counter()
    gaps: list[float] = []
    starts = poll_starts(records, interval)
    for key in accounts:
        polls = starts.get(key, [])
        counts = Counter(int((t - start) // interval) for t in polls if start <= t < end)
        for number in range(intervals):
            tally[_bucket(counts[number])] += 1
        gaps += [b - a for a, b in itertools.pairwise(polls) if start <= a and b < end]
    return SteadyTraffic(
        seconds=seconds,
        requests=len(inside),
        failed=sum(1 for r in inside if r.status != 200),
        mean_rate=len(inside) / seconds if seconds else math.nan,
        peak_rate=max(per_second.values(), default=0),
        polls_per_interval={b: tally[b] for b in ("0", "1", "2+")},
        gaps=(min(gaps), statistics.median(gaps), max(gaps)) if gaps else (math.nan,) * 3,
    )


def _bucket(count: int) -> str:
    return "2+" if count >= 2 else str(count)
