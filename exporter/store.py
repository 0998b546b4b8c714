"""The latest snapshot of every account: immutable values, each swapped in with one assignment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from exporter.errors import ApiErrorReason
from exporter.traffic import TrafficRow

_NO_ERRORS: Mapping[ApiErrorReason, int] = MappingProxyType({r: 0 for r in ApiErrorReason})


class WindowFigures(NamedTuple):
    """The rows of one window from its latest successful request."""

    window: str
    rows: tuple[TrafficRow, ...]
    fetched_at: float  # wall-clock time the request's answer arrived
    date_from: int
    date_to: int


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
    figures: tuple[WindowFigures, ...] = ()  # the latest of each window, at most one per name
    last_success: float | None = None
    poll_duration: float | None = None
    last_error: ApiErrorReason | None = None
    last_error_message: str = ""
    requests_total: int = 0
    errors_total: Mapping[ApiErrorReason, int] = field(default_factory=lambda: _NO_ERRORS)
    next_poll: float | None = None  # wall-clock time of the next planned poll
    dropped_sources: int = 0
    currency: str = ""  # ISO 4217 code of the revenue figures; "" when not configured
    failed_windows: tuple[str, ...] = ()  # the windows whose latest request failed

    def stale_limit(self, window: str) -> float:
        """How long after its last success ``window``'s figures are shown."""
        if self.stale_limits and window in self.windows:
            return self.stale_limits[self.windows.index(window)]
        return self.stale_after

    def visible_figures(self, now: float) -> list[WindowFigures]:
        """Figures still fresh enough to export (younger than their window's stale limit), in
        window order."""
        fresh = {
            f.window: f for f in self.figures if now - f.fetched_at <= self.stale_limit(f.window)
        }
        return [fresh[name] for name in self.windows if name in fresh]

    def stale_deadline(self, now: float) -> float | None:
        """The next moment at which some visible figures become stale (None: none will)."""
        deadlines = [f.fetched_at + self.stale_limit(f.window) for f in self.visible_figures(now)]
        return min(deadlines) if deadlines else None


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
