"""The latest snapshot of every account: immutable values, each swapped in with one assignment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from exporter.errors import ApiErrorReason
from exporter.traffic import TrafficRow

_NO_ERRORS: Mapping[ApiErrorReason, int] = MappingProxyType({r: 0 for r in ApiErrorReason})


# How a snapshot keeps its figures: for each window one flat, exact tuple of strings and numbers,
# ``(window, fetched_at, date_from, date_to, *row_1, *row_2, ...)``. CPython's garbage collector
# stops tracking such a tuple the first time it sees it (never a named tuple, nor any other
# class's instance, nor a tuple holding one that is still tracked), so thousands of accounts'
# figures cost later collections nothing (as named tuples of named tuples, they were most of the
# objects per account that every collection walked).
PackedFigures = tuple[Any, ...]
PackedRow = tuple[Any, ...]  # source_name, impressions, clicks, orders, revenue, ctr, cvr
_ROW = len(TrafficRow._fields)
_HEAD = 4  # window, fetched_at, date_from, date_to


class WindowFigures(NamedTuple):
    """The rows of one window from its latest successful request."""

    window: str
    rows: tuple[TrafficRow, ...]
    fetched_at: float  # wall-clock time the request's answer arrived
    date_from: int
    date_to: int

    def pack(self) -> PackedFigures:
        head = (self.window, self.fetched_at, self.date_from, self.date_to)
        return head + tuple([value for row in self.rows for value in row])

    @classmethod
    def unpack(cls, packed: PackedFigures) -> WindowFigures:
        window, fetched_at, date_from, date_to = packed[:_HEAD]
        rows = tuple(map(TrafficRow._make, packed_rows(packed)))
        return cls(window, rows, fetched_at, date_from, date_to)


def packed_window(packed: PackedFigures) -> str:
    """The window name of packed figures."""
    return str(packed[0])


def packed_rows(packed: PackedFigures) -> list[PackedRow]:
    """The rows of packed figures, each as a plain tuple in ``TrafficRow`` field order."""
    return [packed[i : i + _ROW] for i in range(_HEAD, len(packed), _ROW)]


def pack_figures(figures: Iterable[WindowFigures]) -> tuple[PackedFigures, ...]:
    """The packed form of ``figures``, for ``AccountSnapshot.packed_figures``."""
    return tuple([f.pack() for f in figures])


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Everything the exporter knows about one account after its latest poll."""

    name: str
    labels: Mapping[str, str]
    interval: float
    stale_after: float
    windows: tuple[str, ...]  # the configured window names, in order
    # How long each window's figures are shown after its last success, in ``windows`` order
    # (empty: ``stale_after`` for every window).
    stale_limits: tuple[float, ...] = ()
    polled: bool = False  # at least one poll has finished (successfully or not)
    up: bool = False
    active: bool | None = None  # None until an answer tells
    # The latest figures of each window (at most one per name), packed: read them as ``figures``.
    packed_figures: tuple[PackedFigures, ...] = ()
    last_success: float | None = None
    poll_duration: float | None = None
    last_error: ApiErrorReason | None = None
    last_error_message: str = ""
    requests_total: int = 0
    errors_total: Mapping[ApiErrorReason, int] = field(default_factory=lambda: _NO_ERRORS)
    next_poll: float | None = None  # wall-clock time of the next planned poll
    dropped_sources: int = 0
    failed_windows: tuple[str, ...] = ()  # the windows whose latest request failed

    def stale_limit(self, window: str) -> float:
        """How long after its last success ``window``'s figures are shown."""
        if self.stale_limits and window in self.windows:
            return self.stale_limits[self.windows.index(window)]
        return self.stale_after

    @property
    def figures(self) -> tuple[WindowFigures, ...]:
        """The latest figures of each window, in no particular order."""
        return tuple(map(WindowFigures.unpack, self.packed_figures))

    def window_figures(self, window: str) -> WindowFigures | None:
        """The latest figures of ``window`` (None: never fetched)."""
        packed = next((p for p in self.packed_figures if p[0] == window), None)
        return WindowFigures.unpack(packed) if packed is not None else None

    def visible_figures(self, now: float) -> tuple[WindowFigures, ...]:
        """Figures still fresh enough to export (younger than their window's stale limit), in
        window order."""
        return tuple(map(WindowFigures.unpack, self.visible_packed(now)))

    def visible_packed(self, now: float) -> list[PackedFigures]:
        """``visible_figures`` still packed (read with ``packed_window`` and ``packed_rows``)."""
        fresh = self._fresh(now)
        return [p for name in self.windows for p in fresh if p[0] == name]

    def stale_deadline(self, now: float) -> float | None:
        """The next moment at which some visible figures become stale (None: none will)."""
        deadlines = [
            p[1] + self.stale_limit(p[0]) for p in self._fresh(now) if p[0] in self.windows
        ]
        return min(deadlines) if deadlines else None

    def _fresh(self, now: float) -> list[PackedFigures]:
        if not self.stale_limits:
            return [p for p in self.packed_figures if now - p[1] <= self.stale_after]
        return [p for p in self.packed_figures if now - p[1] <= self.stale_limit(p[0])]


class SnapshotStore:
    """Holds the latest ``AccountSnapshot`` per account.

    ``generation`` changes on every update, so readers can cache what they derive from it.
    """

    def __init__(self, snapshots: Iterable[AccountSnapshot] = ()) -> None:
        self._snapshots: dict[str, AccountSnapshot] = {s.name: s for s in snapshots}
        self.generation = 0

    def put(self, snapshot: AccountSnapshot) -> None:
        self._snapshots[snapshot.name] = snapshot
        self.generation += 1

    def remove(self, name: str) -> None:
        if self._snapshots.pop(name, None) is not None:
            self.generation += 1

    def get(self, name: str) -> AccountSnapshot | None:
        return self._snapshots.get(name)

    def names(self) -> list[str]:
        return list(self._snapshots)

    def snapshots(self) -> list[AccountSnapshot]:
        """All snapshots, in insertion (config) order."""
        return list(self._snapshots.values())

    def __len__(self) -> int:
        return len(self._snapshots)
