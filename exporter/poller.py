"""The poller: every account polled on its schedule, its snapshot stored, its state changes logged.

It puts the pieces together: when to poll (``exporter.schedule``), what a poll does
(``exporter.fetch``: the windows with retries) and what a poll produces (``exporter.snapshot``),
all on one injected ``Clock``; and it applies a reloaded configuration without losing state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from exporter.client import TrafficSourceClient
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import AccountConfig, Config, RestKey
from exporter.errors import ApiError
from exporter.fetch import AccountFetch, ClientProvider, Fetcher, RequestLimit, fetch_windows
from exporter.refresh import due_windows
from exporter.schedule import Cadence, Scheduler
from exporter.selfmetrics import OUTCOMES, SUCCESS, SelfMetrics
from exporter.snapshot import (
    initial_snapshot,
    last_answers,
    next_snapshot,
    reconfigured,
    transition,
)
from exporter.store import AccountSnapshot, SnapshotStore
from exporter.traffic import TrafficRow

log = logging.getLogger(__name__)

# Polls under way at once, per unit of api.max_concurrency: enough to keep every request slot
# busy while some polls sleep between retries; the rest wait as heap entries, not as tasks.
# The one admission limit of polls (the scheduler's, and --once's); requests have their own.
_ADMITTED = 2


class AccountChanges(NamedTuple):
    """What a reload changes: account names added, removed, and changed (in config order)."""

    added: list[str]
    removed: list[str]
    changed: list[str]


def diff_accounts(
    old: Mapping[str, AccountConfig], new: Mapping[str, AccountConfig]
) -> AccountChanges:
    """The accounts a new configuration adds, removes and changes, by name."""
    return AccountChanges(
        added=[n for n in new if n not in old],
        removed=[n for n in old if n not in new],
        changed=[n for n in new if n in old and new[n] != old[n]],
    )


def log_changes(previous: AccountSnapshot, snapshot: AccountSnapshot) -> None:
    """The state change a poll made, once, at the level it deserves."""
    fields: dict[str, object] = {"account": snapshot.name}
    change = transition(previous, snapshot)
    if change == "account polled successfully":
        log.debug(change, extra=fields)  # at info, thousands of lines at start-up
    elif change == "account recovered":
        log.info(change, extra=fields)
    elif change is not None:
        fields.update(reason=str(snapshot.last_error), error=snapshot.last_error_message)
        log.warning(change, extra=fields)


def log_source_cap(snapshot: AccountSnapshot, cap: int) -> None:
    """An account with more sources than the cap (said once per account by the poller)."""
    log.warning(
        "more traffic sources than max_sources_per_account; extra sources not exported",
        extra={"account": snapshot.name, "sources": cap + snapshot.dropped_sources, "cap": cap},
    )


class TimedClient:
    """Sends each request through the client in use, timing it into the request histogram.

    Every attempt counts, under ``success`` or the failure's reason; a cancelled request (stop,
    a reload) has no outcome and is not counted.
    """

    def __init__(self, client: ClientProvider, self_metrics: SelfMetrics, clock: Clock) -> None:
        self._client = client
        self._clock = clock
        histogram = self_metrics.request_duration
        self._durations = {outcome: histogram.labels(outcome) for outcome in OUTCOMES}

    async def fetch(self, key: RestKey, date_from: int, date_to: int) -> tuple[TrafficRow, ...]:
        """One request, timed on the injected clock."""
        started = self._clock.monotonic()
        try:
            rows = await self._client().fetch(key, date_from, date_to)
        except ApiError as error:
            self._durations[error.reason].observe(self._clock.monotonic() - started)
            raise
        self._durations[SUCCESS].observe(self._clock.monotonic() - started)
        return rows


class Poller:
    """Polls every configured account and keeps the store up to date.

    ``client`` sends every request (a reload may replace it: ``apply``); the daemon and
    ``--once`` make theirs with ``for_config``. Every wait is on ``clock`` (the real one by
    default).
    """

    def __init__(
        self,
        config: Config,
        client: TrafficSourceClient,
        store: SnapshotStore,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        self_metrics: SelfMetrics | None = None,
    ) -> None:
        self._config = config
        # The exporter-wide metrics this poller feeds (accounts, internal errors).
        self.self_metrics = self_metrics or SelfMetrics()
        self._client = client
        self.store = store
        self._clock = clock or SYSTEM_CLOCK
        self._rng = rng or random.Random()  # jitter, not cryptography
        # Requests under way, for every account: resized, never replaced, by a reload.
        self._limit = RequestLimit(config.api.max_concurrency)
        self._accounts: dict[str, AccountConfig] = {a.name: a for a in config.accounts}
        self._scheduler = Scheduler(self._clock, self._rng, self._scheduled_poll, self._capacity)
        # Accounts not yet polled (ready() and the one summary line once they all have been).
        self._unpolled = {n for n in self._accounts if not (s := store.get(n)) or not s.polled}
        self._summed_up = False
        self._was_ready = False  # once ready, a reload adding accounts does not take it back
        self._generations: dict[str, int] = {}  # bumped by a key change: older polls are void
        self._first_round_started = self._clock.monotonic()
        self._warned_cap: set[str] = set()
        self.self_metrics.accounts.set(len(self._accounts))
        self.self_metrics.polls_overdue.set_function(self._scheduler.plan.overdue)
        self._timed = TimedClient(lambda: self._client, self.self_metrics, self._clock)
        for account in config.accounts:
            if store.get(account.name) is None:
                store.put(initial_snapshot(account))

    @classmethod
    def for_config(
        cls, config: Config, self_metrics: SelfMetrics, *, clock: Clock | None = None
    ) -> Poller:
        """The poller of the daemon and of ``--once``: an empty store, and a client for
        ``config.api`` that ``close()`` closes."""
        client = TrafficSourceClient.for_api(config.api)
        return cls(config, client, SnapshotStore(), self_metrics=self_metrics, clock=clock)

    async def close(self) -> None:
        """Close the client in use (once its requests are done); after ``stop()``."""
        await self._client.close()

    @property
    def config(self) -> Config:
        """The configuration in force (a reload replaces it)."""
        return self._config

    @property
    def client(self) -> TrafficSourceClient:
        """The client new requests go through (a reload may replace it)."""
        return self._client

    def _current_client(self) -> Fetcher:
        # What fetch.py sends each attempt through: a retry after a reload that replaced the
        # client goes to the new one (the retired one closes once its requests are done).
        return self._timed

    def _capacity(self) -> int:
        return _ADMITTED * self._limit.size

    @property
    def next_poll(self) -> Mapping[str, float]:
        """Wall-clock time of each account's next planned poll (for the status page)."""
        return self._scheduler.plan.next_poll

    # -- one poll ------------------------------------------------------------------------------

    async def poll(self, account: AccountConfig) -> AccountSnapshot:
        """Poll every window of ``account`` once, store and return the new snapshot.

        Admission is the caller's (the scheduler, ``poll_all_once``); each request waits for a
        slot of the request limit.
        """
        generation = self._generations.get(account.name, 0)
        started = self._clock.monotonic()
        config = self._config
        previous = self.store.get(account.name) or initial_snapshot(account)
        due = due_windows(
            account.windows,
            interval=account.interval,
            last=last_answers(previous),
            failed=previous.failed_windows,
            now=self._clock.time(),
            end_offset=config.polling.end_offset,
        )
        how = AccountFetch(
            self._current_client,
            config.api.retries,
            self._limit,
            config.polling.end_offset,
            self._clock,
            self._rng,
        )
        if len(due) == len(account.windows):
            outcomes = await fetch_windows(how, account)
        else:  # the others are fresh enough (their refresh): asked for at a later poll
            outcomes = await fetch_windows(how, replace(account, windows=due)) if due else []
        finished = self._clock.time()
        # A reload while the requests were out may have changed or removed the account: the
        # snapshot takes the labels, interval and windows in force now, not those of the start.
        current = self._accounts.get(account.name)
        if generation != self._generations.get(account.name, 0):
            current = None  # polled with a key replaced since: its outcome is not the account's
        previous = self.store.get(account.name) or previous
        snapshot = next_snapshot(
            current or account,
            previous,
            outcomes,
            finished=finished,
            duration=self._clock.monotonic() - started,
            max_sources=self._config.max_sources_per_account,
        )
        not_before = max((o.result.not_before for o in outcomes), default=0.0)
        if not_before > finished:
            self._scheduler.plan.hold(account.name, not_before - finished)
        if current is None:
            return snapshot
        log_changes(previous, snapshot)
        if snapshot.dropped_sources and account.name not in self._warned_cap:
            self._warned_cap.add(account.name)
            log_source_cap(snapshot, self._config.max_sources_per_account)
        self.store.put(snapshot)
        self._unpolled.discard(account.name)
        self._sum_up_first_round()
        return snapshot

    def _sum_up_first_round(self) -> None:
        """One line once every account has been polled: how many are up, and how long it took."""
        self._was_ready = self._was_ready or not self._unpolled  # probed then or not
        if self._unpolled or self._summed_up:
            return
        self._summed_up = True
        snapshots = [s for n in self._accounts if (s := self.store.get(n)) is not None]
        shortest = min((a.interval for a in self._accounts.values()), default=0.0)
        log_first_round(
            snapshots,
            self._clock.monotonic() - self._first_round_started,
            shortest,
            self._config.api.max_concurrency,
        )

    async def poll_all_once(self) -> list[AccountSnapshot]:
        """Poll every account once (``--once``), as many at a time as the scheduler would."""
        accounts = list(self._config.accounts)
        pending = iter(enumerate(accounts))
        done: list[AccountSnapshot | None] = [None] * len(accounts)

        async def worker() -> None:
            for i, account in pending:  # one shared iterator: each account taken by one worker
                done[i] = await self.poll(account)

        await asyncio.gather(*(worker() for _ in range(min(self._capacity(), len(accounts)))))
        return [s for s in done if s is not None]

    # -- scheduling ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling: the first poll of every account at once, as far as admission allows.

        After the first poll, each account keeps a stable phase within its interval, so the API
        sees a steady rate instead of every account at once.
        """
        self._first_round_started = self._clock.monotonic()
        self._scheduler.start(list(self._accounts))

    async def _scheduled_poll(self, name: str) -> Cadence | None:
        """One poll started by the scheduler; the cadence of the next, or None if it is gone."""
        account = self._accounts.get(name)
        if account is None:
            return None
        try:
            await self.poll(account)
        except Exception:  # a bug must not stop the account's polling: log it, count it
            self.self_metrics.internal_errors.inc()
            log.exception("unexpected error while polling", extra={"account": name})
        account = self._accounts.get(name)  # a reload may have changed or removed it
        if account is None:
            return None
        return Cadence(account.interval, self._config.polling.jitter)

    def healthy(self) -> bool:
        """Polling has started and its scheduler is running."""
        return self._scheduler.running

    def ready(self) -> bool:
        """Every account polled once; then true for good (a new account is only pending)."""
        self._was_ready = self._was_ready or not self._unpolled
        return self._was_ready

    async def stop(self) -> None:
        """Cancel the scheduler and every poll under way, and wait for them to end."""
        await self._scheduler.stop()

    # -- reload --------------------------------------------------------------------------------

    def apply(
        self, config: Config, client: TrafficSourceClient | None = None
    ) -> Mapping[str, list[str]]:
        """Switch to a new, already validated config without losing state.

        Added accounts are polled at once, removed ones vanish, unchanged ones keep their data and
        schedule; a changed key is polled at once (a poll under way with the old key is cancelled
        and could not store its outcome); other changes apply from the next poll.
        """
        new = {a.name: a for a in config.accounts}
        old = self._accounts
        changes = diff_accounts(old, new)
        self._config = config
        self._accounts = new
        self.self_metrics.accounts.set(len(new))
        if client is not None:
            self._client = client
        self._limit.resize(config.api.max_concurrency)
        for name in changes.removed:
            self._generations[name] = self._generations.get(name, 0) + 1
            self._scheduler.remove(name)
            self._unpolled.discard(name)
            self.store.remove(name)
        self._sum_up_first_round()  # the last ones not yet polled may have been removed
        for name in changes.changed:
            snapshot = self.store.get(name)
            if snapshot is not None:
                self.store.put(reconfigured(snapshot, new[name]))
            if new[name].rest_key != old[name].rest_key:  # polled again at once, with the new key
                self._generations[name] = self._generations.get(name, 0) + 1
                self._scheduler.restart(name)
        for name in changes.added:
            self.store.put(initial_snapshot(new[name]))
            self._unpolled.add(name)
            self._scheduler.add(name)
        self._scheduler.wake()  # the admission limit may have changed too
        return changes._asdict()


def log_first_round(
    snapshots: list[AccountSnapshot], took: float, shortest: float, max_concurrency: int
) -> None:
    """Say once how the first round went, and warn when it took longer than an interval."""
    up = sum(1 for s in snapshots if s.up)
    log.info(
        "every account polled once",
        extra={
            "accounts": len(snapshots),
            "up": up,
            "down": len(snapshots) - up,
            "seconds": round(took, 3),
        },
    )
    if snapshots and took > shortest:
        # Over capacity, every account comes round once per such round, not once per
        # interval: say so once, with what would fix it.
        log.warning(
            "polling every account takes longer than the polling interval; accounts are "
            "polled less often than configured: raise api.max_concurrency or the interval, "
            "or shard the accounts",
            extra={
                "seconds": round(took, 3),
                "interval": round(shortest, 3),
                "max_concurrency": max_concurrency,
            },
        )
