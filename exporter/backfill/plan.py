"""What a backfill requests: the points (account, window, step) and the API requests that
answer them, minus what the state file already holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.config import AccountConfig, Config
from exporter.traffic import TrafficRow


@dataclass(frozen=True, order=True)
class Point:
    """One sample time of one account's window: becomes one timestamp of its series."""

    account: str
    window: str
    step: int  # Unix seconds: the sample's timestamp and the poll time the window ends at


@dataclass(frozen=True)
class Request:
    """One API request; every point asking for exactly these bounds shares its answer."""

    account: AccountConfig
    date_from: int
    date_to: int
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Result:
    """What one point got: rows, or the reason it failed. One line of the state file."""

    point: Point
    date_from: int
    date_to: int
    rows: tuple[TrafficRow, ...] | None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.rows is not None


@dataclass(frozen=True)
class Plan:
    """The points of a backfill, which are already known, and the requests still needed."""

    steps: tuple[int, ...]
    points: tuple[Point, ...]
    requests: tuple[Request, ...]
    known: Mapping[Point, Result]  # points answered by the state file (directly or via bounds)
    empty: int  # points whose window has no length (today at local midnight): no sample

    @property
    def nominal_requests(self) -> int:
        """accounts x windows x steps, before resume and merging identical windows."""
        return len(self.points) + self.empty


def step_times(start: int, end: int, step: int) -> tuple[int, ...]:
    """Multiples of ``step`` (since the epoch) from ``start`` to ``end``, both included.

    Aligned steps make reruns over other ranges meet the same points, and line up with the
    hourly steps of subqueries such as ``avg_over_time(x[7d:1h])``.
    """
    first = -(-start // step) * step
    return tuple(range(first, end + 1, step))


def make_plan(
    config: Config, steps: Sequence[int], state: Mapping[Point, Result] | None = None
) -> Plan:
    """Every (account, window, step); points already in ``state`` are not requested again."""
    state = state or {}
    answered: dict[tuple[str, int, int], Result] = {}
    for result in state.values():
        if result.ok:
            answered[(result.point.account, result.date_from, result.date_to)] = result
    points: list[Point] = []
    known: dict[Point, Result] = {}
    groups: dict[tuple[str, int, int], list[Point]] = {}
    accounts: dict[str, AccountConfig] = {}
    empty = 0
    for step in steps:
        for account in config.accounts:
            accounts[account.name] = account
            for window in account.windows:
                date_from, date_to = window.bounds(step, config.polling.end_offset)
                if date_to <= date_from:
                    empty += 1
                    continue
                point = Point(account.name, window.name, step)
                points.append(point)
                bounds = (account.name, date_from, date_to)
                previous = answered.get(bounds)
                if previous is not None:
                    known[point] = dataclasses.replace(previous, point=point)
                else:
                    groups.setdefault(bounds, []).append(point)
    requests = tuple(
        Request(accounts[name], date_from, date_to, tuple(group))
        for (name, date_from, date_to), group in groups.items()
    )
    return Plan(tuple(steps), tuple(points), requests, known, empty)
