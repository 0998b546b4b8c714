"""Metric names, HELP texts, and turning account snapshots into the text exposition.

No I/O here. Each account's part of the exposition is rendered once, when its snapshot changes
(or when some of its figures turn stale), and a scrape joins the cached parts: with thousands of
accounts a scrape costs a join, not a re-render of every sample. Both steps come in slices
(``AccountsExposition.refresh`` is a generator, ``chunks`` yields one family at a time), so the
web handler can let polls run in between and never holds a copy of the whole body.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from exporter.errors import ApiErrorReason
from exporter.selfmetrics import SelfMetrics
from exporter.store import AccountSnapshot, SnapshotStore, packed_rows, packed_window
from exporter.traffic import TrafficRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
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

_IMPRESSIONS, _CLICKS, _ORDERS, _REVENUE, _CTR, _CVR = (f.name for f, _ in TRAFFIC_FIELDS)

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
    "retargeting_account_info", "gauge", "Always 1; the account's configured labels"
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
        "(retargeting_poll_interval_seconds)."
    )


# Every reason, with the rest of its error counter's labels (enum members format slowly).
_ERROR_LABELS = tuple((reason, f',reason="{reason.value}"}}') for reason in ApiErrorReason)


@functools.lru_cache(maxsize=4096)
def _row_labels(source: str, window: str) -> str:
    """The labels after ``account`` of a traffic sample (a few sources x windows: cached)."""
    return f',source_name="{escape(source)}",window="{escape(window)}"}} '


def render_account(snapshot: AccountSnapshot, now: float) -> tuple[str, ...]:
    """One account's samples, one text block per family of ``ACCOUNT_FAMILIES``."""
    account = f'account="{escape(snapshot.name)}"'
    blocks: list[list[str]] = [[] for _ in ACCOUNT_FAMILIES]
    # The traffic samples, written out field by field (the hot part: 48 lines for an account
    # with 4 sources and 2 windows; this way half the time of a loop over TRAFFIC_FIELDS).
    # Counts are ints (TrafficRow), whose text is their f-string; the rest go through number().
    impressions, clicks, orders, revenue, ctr, cvr = blocks[: len(TRAFFIC_FIELDS)]
    head = "{" + account
    for figures in snapshot.visible_packed(now):
        window = packed_window(figures)
        for source, shown, clicked, ordered, earned, ctr_ratio, cvr_ratio in packed_rows(figures):
            labels = head + _row_labels(source, window)
            impressions.append(f"{_IMPRESSIONS}{labels}{shown}\n")
            clicks.append(f"{_CLICKS}{labels}{clicked}\n")
            orders.append(f"{_ORDERS}{labels}{ordered}\n")
            revenue.append(f"{_REVENUE}{labels}{number(earned)}\n")
            ctr.append(f"{_CTR}{labels}{number(ctr_ratio)}\n")
            cvr.append(f"{_CVR}{labels}{number(cvr_ratio)}\n")
    base = len(TRAFFIC_FIELDS)
    simple = f"{{{account}}}"
    if snapshot.polled:
        blocks[base].append(f"{UP.name}{simple} {int(snapshot.up)}\n")
    if snapshot.active is not None:
        blocks[base + 1].append(f"{ACTIVE.name}{simple} {int(snapshot.active)}\n")
    blocks[base + 2].append(f"{REQUESTS.name}{simple} {snapshot.requests_total}\n")
    errors = snapshot.errors_total
    blocks[base + 3].extend(
        f"{ERRORS.name}{{{account}{labels} {errors.get(reason, 0)}\n"
        for reason, labels in _ERROR_LABELS
    )
    if snapshot.last_success is not None:
        blocks[base + 4].append(f"{LAST_SUCCESS.name}{simple} {number(snapshot.last_success)}\n")
    if snapshot.poll_duration is not None:
        blocks[base + 5].append(f"{POLL_DURATION.name}{simple} {number(snapshot.poll_duration)}\n")
    blocks[base + 6].append(f"{POLL_INTERVAL.name}{simple} {number(snapshot.interval)}\n")
    extra = "".join(f',{k}="{escape(v)}"' for k, v in sorted(snapshot.labels.items()))
    blocks[base + 7].append(f"{ACCOUNT_INFO.name}{{{account}{extra}}} 1\n")
    if snapshot.polled:
        blocks[base + 8].append(f"{DROPPED_SOURCES.name}{simple} {snapshot.dropped_sources}\n")
    fetched = {p[0]: p[1] for p in snapshot.packed_figures}
    blocks[base + 9].extend(
        f'{WINDOW_LAST_SUCCESS.name}{{{account},window="{escape(w)}"}} {number(fetched[w])}\n'
        for w in snapshot.windows
        if w in fetched
    )
    return tuple("".join(block) for block in blocks)


@dataclass(frozen=True, slots=True)
class _Rendered:
    snapshot: AccountSnapshot
    visible: tuple[str, ...]  # the windows whose figures were fresh when rendered
    blocks: tuple[bytes, ...]  # one per family of ACCOUNT_FAMILIES
    deadline: float | None  # when some of those figures turn stale


# Work units of one refresh() step: looking at an account costs 1, rendering it 25, so a step
# renders at most 50 accounts or looks at 1,250 unchanged ones. Steps stay short because every
# answer that arrives during one waits for its end, holding its request's concurrency slot.
_STEP = 1250
_RENDER_COST = 25
_versions = itertools.count(1)


class AccountsExposition:
    """Caches every account's rendered part; serves them joined, one family at a time.

    ``refresh`` re-renders only accounts whose snapshot changed or whose figures turned stale;
    ``version`` changes whenever it did, so derived data (the gzip of the body) can be cached.
    An idle scrape renders nothing.
    """

    def __init__(self) -> None:
        self._headers = tuple(
            f"# HELP {f.name} {help_text(f)}\n# TYPE {f.name} {f.type}\n".encode()
            for f in ACCOUNT_FAMILIES
        )
        self._parts: dict[str, _Rendered] = {}
        self._generation = -1
        self._valid_until = float("-inf")
        self._body = b""
        self._body_version = 0
        self.version = 0  # unique over all instances, so a reload's new instance never matches
        self.renders = 0  # accounts rendered so far (for tests and benchmarks)

    def refresh(self, store: SnapshotStore, now: float) -> Iterator[None]:
        """Bring the cached parts up to date with ``store`` at ``now``.

        A generator: it yields between steps of a few ms, for a caller on an event loop to
        let other tasks run (rendering thousands of changed accounts at once would hold it). The new
        parts replace the old ones at the end, all at once.
        """
        if store.generation == self._generation and now < self._valid_until:
            return
        generation = store.generation
        recheck = now >= self._valid_until  # some figures may have turned stale since
        old = self._parts
        parts: dict[str, _Rendered] = {}
        valid_until = float("inf")
        work = 0
        for snapshot in store.snapshots():
            work += 1
            cached = old.get(snapshot.name)
            if cached is None or cached.snapshot is not snapshot or recheck:
                visible = tuple(packed_window(p) for p in snapshot.visible_packed(now))
                if cached is None or cached.snapshot is not snapshot or cached.visible != visible:
                    blocks = tuple(block.encode() for block in render_account(snapshot, now))
                    cached = _Rendered(snapshot, visible, blocks, snapshot.stale_deadline(now))
                    self.renders += 1
                    work += _RENDER_COST
            parts[snapshot.name] = cached
            if cached.deadline is not None and cached.deadline < valid_until:
                valid_until = cached.deadline
            if work >= _STEP:
                work = 0
                yield
        self._parts = parts
        self._generation = generation
        self._valid_until = valid_until
        self.version = next(_versions)

    def chunks(self) -> Iterator[bytes]:
        """The accounts' exposition as refreshed last: per family, its header, then its samples.

        Families without samples are left out. The parts are taken now; each family is joined
        only when the iterator gets to it, so the whole body is never copied at once.
        """
        blocks = [p.blocks for p in self._parts.values()]
        return self._join(blocks)

    def _join(self, blocks: list[tuple[bytes, ...]]) -> Iterator[bytes]:
        for i, header in enumerate(self._headers):
            samples = b"".join([b[i] for b in blocks])
            if samples:
                yield header
                yield samples

    def render(self, store: SnapshotStore, now: float) -> bytes:
        """The accounts' exposition in one piece (``--once`` and tests); cached per version."""
        for _ in self.refresh(store, now):
            pass
        if self._body_version != self.version:
            self._body = b"".join(self.chunks())
            self._body_version = self.version
        return self._body


def render_all(
    exposition: AccountsExposition, store: SnapshotStore, own: SelfMetrics, now: float
) -> bytes:
    """The whole exposition in one piece (``--once`` and tests)."""
    return exposition.render(store, now) + own.render()
