"""The per-account metric families: names, HELP texts, and snapshots turned into exposition.

No I/O here. Each account's part of the exposition is rendered once, when its snapshot changes
(or when some of its figures turn stale), and a scrape joins the cached parts: with thousands of
accounts a scrape costs a join, not a re-render of every sample. ``chunks`` yields one family at
a time, so the web handler never holds a copy of the whole body. The exporter-wide families are
prometheus-client metrics in ``exporter.selfmetrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from exporter.errors import ApiErrorReason
from exporter.selfmetrics import SelfMetrics
from exporter.store import AccountSnapshot, SnapshotStore
from exporter.traffic import TrafficRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, eq=False)  # one object per family: compared and hashed by identity
class Family:
    name: str
    type: str  # gauge | counter
    help: str


IMPRESSIONS = Family("retargeting_impressions", "gauge", "Impressions in the window")
CLICKS = Family("retargeting_clicks", "gauge", "Clicks in the window (API field click)")
ORDERS = Family("retargeting_orders", "gauge", "Orders attributed in the window (API field order)")
REVENUE = Family(
    "retargeting_revenue",
    "gauge",
    "Revenue attributed in the window, in the shop's currency units",
)
CTR = Family(
    "retargeting_ctr_ratio",
    "gauge",
    "Click-through rate reported by the API, as a ratio (API ctr / 100)",
)
CVR = Family(
    "retargeting_cvr_ratio",
    "gauge",
    "Conversion rate reported by the API, as a ratio (API cvr / 100)",
)

# Traffic figures: one series per account, source and window, in this order.
TRAFFIC_FIELDS: tuple[tuple[Family, Callable[[TrafficRow], float]], ...] = (
    (IMPRESSIONS, lambda r: r.impressions),
    (CLICKS, lambda r: r.clicks),
    (ORDERS, lambda r: r.orders),
    (REVENUE, lambda r: r.revenue),
    (CTR, lambda r: r.ctr_ratio),
    (CVR, lambda r: r.cvr_ratio),
)

UP = Family(
    "retargeting_up", "gauge", "1 if the last poll of every window of the account succeeded, else 0"
)
ACTIVE = Family(
    "retargeting_account_active",
    "gauge",
    "0 after the API said the account is not active, 1 after a successful answer",
)
REQUESTS = Family(
    "retargeting_api_requests_total",
    "counter",
    "API requests made for the account, retries included",
)
ERRORS = Family(
    "retargeting_api_errors_total", "counter", "Failed API requests for the account, by reason"
)
LAST_SUCCESS = Family(
    "retargeting_last_success_timestamp_seconds",
    "gauge",
    "Unix time at the end of the last poll in which every window succeeded",
)
POLL_DURATION = Family(
    "retargeting_poll_duration_seconds",
    "gauge",
    "Duration of the account's last poll, retries included",
)
POLL_INTERVAL = Family(
    "retargeting_poll_interval_seconds", "gauge", "The account's configured polling interval"
)
ACCOUNT_INFO = Family(
    "retargeting_account_info",
    "gauge",
    "Always 1; the account's configured labels and the currency of its revenue",
)
DROPPED_SOURCES = Family(
    "retargeting_sources_dropped",
    "gauge",
    "Traffic sources in the last answer that were not exported because of max_sources_per_account",
)

WINDOW_LAST_SUCCESS = Family(
    "retargeting_window_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the window's last successful request (its figures go stale from here)",
)

ACCOUNT_FAMILIES: tuple[Family, ...] = (
    *(f for f, _ in TRAFFIC_FIELDS),
    UP, ACTIVE, REQUESTS, ERRORS, LAST_SUCCESS, POLL_DURATION, POLL_INTERVAL, ACCOUNT_INFO,
    DROPPED_SOURCES, WINDOW_LAST_SUCCESS,
)  # fmt: skip

# Every metric name the exporter can expose (dashboards and alerts may use only these): the
# per-account families above and the exporter-wide ones of ``exporter.selfmetrics``.
EXPORTER_NAMES: frozenset[str] = SelfMetrics(loop_lag=float).names()
METRIC_NAMES: frozenset[str] = frozenset(f.name for f in ACCOUNT_FAMILIES) | EXPORTER_NAMES

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def escape(value: str) -> str:
    """Escape a label value for the text exposition format."""
    return value.translate(_ESCAPES)


def number(value: float | int) -> str:
    """Shortest exact text for a sample value."""
    if type(value) is int:  # the usual case first (counts)
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(value)


def help_text(family: Family) -> str:
    """A family's HELP text: constant for the life of the process (no configured value in it,
    as the interval may differ per account and change on reload)."""
    if family in (ACCOUNT_INFO, POLL_INTERVAL):
        return family.help + "."
    return (
        f"{family.help}. Refreshed by polling the Retargeting API at the account's interval "
        "(retargeting_poll_interval_seconds), or a window's longer refresh."
    )


def render_account(snapshot: AccountSnapshot, now: float) -> tuple[str, ...]:
    """One account's samples, one text block per family of ``ACCOUNT_FAMILIES``."""
    account = f'account="{escape(snapshot.name)}"'
    blocks: dict[Family, list[str]] = {family: [] for family in ACCOUNT_FAMILIES}

    def add(family: Family, value: float, labels: str = "") -> None:
        blocks[family].append(f"{family.name}{{{account}{labels}}} {number(value)}\n")

    for figures in snapshot.visible_figures(now):
        window = escape(figures.window)
        for row in figures.rows:
            labels = f',source_name="{escape(row.source_name)}",window="{window}"'
            for family, value in TRAFFIC_FIELDS:
                add(family, value(row), labels)
    if snapshot.polled:
        add(UP, int(snapshot.up))
    if snapshot.active is not None:
        add(ACTIVE, int(snapshot.active))
    add(REQUESTS, snapshot.requests_total)
    for reason in ApiErrorReason:  # every reason from the start: increase() never misses one
        add(ERRORS, snapshot.errors_total.get(reason, 0), f',reason="{reason.value}"')
    if snapshot.last_success is not None:
        add(LAST_SUCCESS, snapshot.last_success)
    if snapshot.poll_duration is not None:
        add(POLL_DURATION, snapshot.poll_duration)
    add(POLL_INTERVAL, snapshot.interval)
    extra = f',currency="{snapshot.currency}"' if snapshot.currency else ""
    add(
        ACCOUNT_INFO,
        1,
        extra + "".join(f',{k}="{escape(v)}"' for k, v in sorted(snapshot.labels.items())),
    )
    if snapshot.polled:
        add(DROPPED_SOURCES, snapshot.dropped_sources)
    fetched = {f.window: f.fetched_at for f in snapshot.figures}
    for window in snapshot.windows:  # even once the figures went stale: how old they are
        if window in fetched:
            add(WINDOW_LAST_SUCCESS, fetched[window], f',window="{escape(window)}"')
    return tuple("".join(blocks[family]) for family in ACCOUNT_FAMILIES)


@dataclass(frozen=True, slots=True)
class _Rendered:
    snapshot: AccountSnapshot
    visible: tuple[str, ...]  # the windows whose figures were fresh when rendered
    blocks: tuple[bytes, ...]  # one per family of ACCOUNT_FAMILIES
    deadline: float | None  # when some of those figures turn stale


# Accounts rendered between two chances for the event loop to run (a few milliseconds).
RENDERS_PER_STEP = 50


class AccountsExposition:
    """Caches every account's rendered part; serves them joined, one family at a time.

    ``refresh`` re-renders only accounts whose snapshot changed or whose figures turned stale,
    so an idle scrape renders nothing; ``version`` changes whenever it did, so derived data (the
    gzip of the body) can be cached.
    """

    def __init__(self) -> None:
        self._headers = tuple(
            f"# HELP {f.name} {help_text(f)}\n# TYPE {f.name} {f.type}\n".encode()
            for f in ACCOUNT_FAMILIES
        )
        self._parts: dict[str, _Rendered] = {}
        self._generation = -1
        self._valid_until = float("-inf")
        self.version = 0

    def refresh(self, store: SnapshotStore, now: float) -> Iterator[None]:
        """Bring the cached parts up to date with ``store`` at ``now``.

        A generator: it yields after every ``RENDERS_PER_STEP`` accounts it renders, for a caller
        on an event loop to let other tasks run (at start-up, thousands of accounts change
        between two scrapes). The new parts replace the old ones at the end, all at once.
        """
        if store.generation == self._generation and now < self._valid_until:
            return
        generation = store.generation  # the store may change while this yields
        recheck = now >= self._valid_until  # some figures may have turned stale since
        parts: dict[str, _Rendered] = {}
        rendered = 0
        for snapshot in store.snapshots():
            cached = self._parts.get(snapshot.name)
            if cached is None or cached.snapshot is not snapshot or recheck:
                visible = tuple(f.window for f in snapshot.visible_figures(now))
                if cached is None or cached.snapshot is not snapshot or cached.visible != visible:
                    blocks = tuple(block.encode() for block in render_account(snapshot, now))
                    cached = _Rendered(snapshot, visible, blocks, snapshot.stale_deadline(now))
                    rendered += 1
                    if rendered % RENDERS_PER_STEP == 0:
                        yield
            parts[snapshot.name] = cached
        self._parts = parts
        self._generation = generation
        deadlines = [p.deadline for p in parts.values() if p.deadline is not None]
        self._valid_until = min(deadlines, default=float("inf"))
        self.version += 1

    def chunks(self) -> Iterator[bytes]:
        """The accounts' exposition as refreshed last: per family, its header, then its samples.

        Families without samples are left out. The parts are taken now; each family is joined
        only when the iterator gets to it, so the whole body is never copied at once.
        """
        blocks = [p.blocks for p in self._parts.values()]
        for i, header in enumerate(self._headers):
            samples = b"".join([b[i] for b in blocks])
            if samples:
                yield header
                yield samples

    def render(self, store: SnapshotStore, now: float) -> bytes:
        """The accounts' exposition in one piece (``--once`` and tests)."""
        for _ in self.refresh(store, now):
            pass
        return b"".join(self.chunks())


def render_all(
    exposition: AccountsExposition, store: SnapshotStore, own: SelfMetrics, now: float
) -> bytes:
    """The whole exposition in one piece (``--once`` and tests)."""
    return exposition.render(store, now) + own.render()
