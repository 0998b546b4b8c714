"""Scheduling: every account polled once per interval, spread over it, under one concurrency limit.

One task runs a heap of due accounts and starts their polls, at most ``_ADMITTED`` times the
request limit at once.

A poll requests every window of the account. Transient failures are retried within the poll with
exponential back-off and full jitter (honouring ``Retry-After``); permanent ones are not. The
result of every poll becomes a new ``AccountSnapshot`` in the store. A state change (up → down,
reason changed, recovery) is logged once.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import NamedTuple

from exporter.client import ApiError, ApiErrorReason, TrafficRow, TrafficSourceClient
from exporter.config import AccountConfig, Config, RestKey, RetryConfig, Window
from exporter.store import AccountSnapshot, SnapshotStore, WindowFigures

log = logging.getLogger(__name__)

# The documented sources come first when the per-account cap forces a choice.
_DOCUMENTED = ("Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups")

# Polls under way at once, per unit of api.max_concurrency. The request limit alone would let
# every due poll start and queue its requests: at start-up that is every account, and 10,000
# polls waiting with their tasks and futures are 440,000 objects that every garbage collection
# of the start-up cycle walked (pauses of 0.1-0.2 s). Twice the limit keeps every request slot
# busy even while some admitted polls sleep between retries. Accounts not yet admitted wait as
# entries of the scheduler's heap: a tuple each, which the collector does not track.
_ADMITTED = 2


def phase(name: str) -> float:
    """A stable fraction in [0, 1) per account name: spreads polls evenly over the interval."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def initial_snapshot(account: AccountConfig) -> AccountSnapshot:
    """What the store holds for an account before its first poll."""
    return AccountSnapshot(
        name=account.name,
        labels=_frozen(account.labels),
        interval=account.interval,
        stale_after=account.stale_after,
        windows=tuple(w.name for w in account.windows),
    )


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy: the snapshot must not change with the config's dict."""
    return MappingProxyType(dict(labels))


def cap_sources(rows: tuple[TrafficRow, ...], cap: int) -> tuple[tuple[TrafficRow, ...], int]:
    """At most ``cap`` rows, documented sources first, then by name; and how many were dropped."""
    if len(rows) <= cap:
        return rows, 0
    ranked = sorted(
        rows,
        key=lambda r: (
            _DOCUMENTED.index(r.source_name) if r.source_name in _DOCUMENTED else len(_DOCUMENTED),
            r.source_name,
        ),
    )
    return tuple(ranked[:cap]), len(rows) - cap


class FetchResult(NamedTuple):
    """One window fetched with retries: the rows, or the last error, and what it took.

    (Named tuples here and in ``_WindowOutcome``: one of each per request, built in a third of
    the time of a frozen dataclass.)
    """

    rows: tuple[TrafficRow, ...] | None
    error: ApiError | None
    attempts: int
    failures: list[ApiErrorReason]  # the reason of every failed attempt, in order
    fetched_at: float  # wall-clock time of the successful answer (0.0 on failure)
    not_before: float  # wall-clock time before which no new request may be sent (Retry-After)


class RetryAfterGate:
    """When the API asked (``Retry-After``) to be left alone: shared by one account's requests.

    The windows of a poll go out concurrently, or queue for a slot; once one of them is told to
    wait, none of them may send before the time is up.
    """

    def __init__(self) -> None:
        self._until = 0.0  # time.monotonic()

    def hold(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())


async def fetch_with_retries(
    client: TrafficSourceClient,
    key: RestKey,
    date_from: int,
    date_to: int,
    *,
    retries: RetryConfig,
    limit: asyncio.Semaphore,
    give_up_at: float,
    clock: Callable[[], float],
    rng: random.Random,
    gate: RetryAfterGate | None = None,
) -> FetchResult:
    """Request one window; retry transient failures with exponential back-off and full jitter.

    Shared by the poller and the backfill, so both send requests the same way: every attempt
    holds a slot of ``limit`` (the process-wide concurrency limit), ``Retry-After`` is honoured
    (no request is sent before it has elapsed; pass one ``gate`` for all requests of an account),
    permanent errors are not retried, and no retry starts after ``give_up_at``
    (``time.monotonic()``).
    """
    gate = gate or RetryAfterGate()
    failures: list[ApiErrorReason] = []
    error: ApiError | None = None
    attempt = 0
    while True:
        wait = gate.remaining()
        if wait > 0:
            if time.monotonic() + wait > give_up_at:
                # Another request of the account was told to wait past this poll's budget.
                error = error or ApiError(
                    ApiErrorReason.RATE_LIMITED, "not sent: the API asked to wait (Retry-After)"
                )
                return FetchResult(None, error, attempt, failures, 0.0, clock() + wait)
            await asyncio.sleep(wait)
            continue
        try:
            async with limit:
                if gate.remaining() > 0:
                    continue  # told to wait while this request queued for a slot
                attempt += 1
                rows = await client.fetch(key, date_from, date_to)
        except ApiError as failed:
            error = failed
            failures.append(failed.reason)
            if failed.retry_after is not None:
                gate.hold(failed.retry_after)
            not_before = clock() + gate.remaining()
            if not failed.transient or attempt >= retries.attempts:
                return FetchResult(None, failed, attempt, failures, 0.0, not_before)
            cap = min(retries.max_backoff, retries.initial_backoff * 2 ** (attempt - 1))
            delay = rng.uniform(0, cap)  # full jitter; the gate adds any Retry-After wait
            if time.monotonic() + max(delay, gate.remaining()) > give_up_at:
                return FetchResult(None, failed, attempt, failures, 0.0, not_before)
            await asyncio.sleep(delay)
            continue
        return FetchResult(rows, None, attempt, failures, clock(), clock() + gate.remaining())


class _WindowOutcome(NamedTuple):
    window: Window
    date_from: int
    date_to: int
    result: FetchResult


class Poller:
    """Polls every configured account and keeps the store up to date."""

    def __init__(
        self,
        config: Config,
        client: TrafficSourceClient,
        store: SnapshotStore,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._clock = clock
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._limit = asyncio.Semaphore(config.api.max_concurrency)
        self._admission = asyncio.Semaphore(_ADMITTED * config.api.max_concurrency)
        self._accounts: dict[str, AccountConfig] = {a.name: a for a in config.accounts}
        # Scheduling: a heap of (monotonic due time, ticket, name); an entry counts only while
        # its ticket is the account's current one (a removed or re-added account's old entries
        # are skipped). One task runs the heap; a task per poll under way.
        self._due: list[tuple[float, int, str]] = []
        self._tickets: dict[str, int] = {}
        self._next_ticket = itertools.count()
        self._epochs: dict[str, float] = {}  # accounts not yet polled by the schedule: start time
        self._slots: dict[str, float] = {}  # each account's current slot, before jitter
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._scheduler: asyncio.Task[None] | None = None
        # Accounts not yet polled (ready() and the one summary line once they all have been).
        self._unpolled = {n for n in self._accounts if not (s := store.get(n)) or not s.polled}
        self._summed_up = False
        self._first_round_started = time.monotonic()
        self._wake = asyncio.Event()
        self._not_before: dict[str, float] = {}
        self._warned_cap: set[str] = set()
        self._limit_size = config.api.max_concurrency
        self._running = False
        self.internal_errors = 0
        # Wall-clock time of each account's next planned poll (for the status page).
        self.next_poll: dict[str, float] = {}
        for account in config.accounts:
            if store.get(account.name) is None:
                store.put(initial_snapshot(account))

    @property
    def config(self) -> Config:
        return self._config

    # -- one poll ------------------------------------------------------------------------------

    async def poll(self, account: AccountConfig) -> AccountSnapshot:
        """Poll every window of ``account`` once, store and return the new snapshot.

        Polls wait for admission before they start their requests (see ``_ADMITTED``).
        """
        async with self._admission:
            return await self._poll(account)

    async def _poll(self, account: AccountConfig) -> AccountSnapshot:
        started = time.monotonic()
        now = self._clock()
        gate = RetryAfterGate()  # a Retry-After for one window holds back all of them
        outcomes = await self._fetch_windows(account, now, gate)
        finished = self._clock()
        # A reload while the requests were out may have changed or removed the account: the
        # snapshot takes the labels, interval and windows in force now, not those of the start.
        current = self._accounts.get(account.name)
        previous = self._store.get(account.name) or initial_snapshot(account)
        snapshot = self._next_snapshot(current or account, previous, outcomes, finished, started)
        not_before = max((o.result.not_before for o in outcomes), default=0.0)
        if not_before > finished:
            self._not_before[account.name] = not_before
        self._log_transition(previous, snapshot)
        if current is not None:
            self._store.put(snapshot)
        self._unpolled.discard(account.name)
        self._sum_up_first_round()
        return snapshot

    def _sum_up_first_round(self) -> None:
        """One line once every account has been polled: how many are up, and how long it took."""
        if self._unpolled or self._summed_up:
            return
        self._summed_up = True
        snapshots = [s for n in self._accounts if (s := self._store.get(n)) is not None]
        up = sum(1 for s in snapshots if s.up)
        log.info(
            "every account polled once",
            extra={
                "accounts": len(snapshots),
                "up": up,
                "down": len(snapshots) - up,
                "seconds": round(time.monotonic() - self._first_round_started, 3),
            },
        )

    async def _fetch_windows(
        self, account: AccountConfig, now: float, gate: RetryAfterGate
    ) -> list[_WindowOutcome]:
        """Every window of the account, concurrently, in the order configured.

        The first window runs in this task, the others in a task each: one task fewer per
        poll than ``asyncio.gather`` and no gathering future (20,000 requests a cycle at 10,000
        accounts; every task and future is also an object for the collector to walk while it
        is under way). If this is cancelled, or a window fails with an unexpected error, the
        other windows' requests are cancelled too.
        """
        if not account.windows:  # the config never allows it; a hand-made account might
            return []
        first, *more = account.windows
        others = [asyncio.create_task(self._fetch(account, w, now, gate)) for w in more]
        try:
            outcomes = [await self._fetch(account, first, now, gate)]
            for task in others:
                outcomes.append(await task)
        except BaseException:
            for task in others:
                task.cancel()
            raise
        return outcomes

    async def _fetch(
        self, account: AccountConfig, window: Window, now: float, gate: RetryAfterGate
    ) -> _WindowOutcome:
        date_from, date_to = window.bounds(now, self._config.polling.end_offset)
        result = await fetch_with_retries(
            self._client,
            account.rest_key,
            date_from,
            date_to,
            retries=self._config.api.retries,
            limit=self._limit,
            # Retries must end well inside the interval so polls never pile up.
            give_up_at=time.monotonic() + account.interval / 2,
            clock=self._clock,
            rng=self._rng,
            gate=gate,
        )
        # Every request's outcome, for debugging; state changes are logged once, at info/warn.
        # Guarded: this runs for every window of every poll, and debug is usually off.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "window polled",
                extra={
                    "account": account.name,
                    "window": window.name,
                    "date_from": date_from,
                    "date_to": date_to,
                    "attempts": result.attempts,
                    "failures": ",".join(result.failures) or "none",
                    "rows": len(result.rows) if result.rows is not None else "-",
                    "error": result.error.message if result.error is not None else "",
                },
            )
        return _WindowOutcome(window, date_from, date_to, result)

    def _cap_sources(
        self, account: str, rows: tuple[TrafficRow, ...]
    ) -> tuple[tuple[TrafficRow, ...], int]:
        kept, dropped = cap_sources(rows, self._config.max_sources_per_account)
        if dropped and account not in self._warned_cap:
            self._warned_cap.add(account)
            log.warning(
                "more traffic sources than max_sources_per_account; extra sources not exported",
                extra={"account": account, "sources": len(rows), "cap": len(kept)},
            )
        return kept, dropped

    def _next_snapshot(
        self,
        account: AccountConfig,
        previous: AccountSnapshot,
        outcomes: list[_WindowOutcome],
        finished: float,
        started: float,
    ) -> AccountSnapshot:
        windows = {w.name for w in account.windows}
        figures = {p[0]: p for p in previous.packed_figures if p[0] in windows}
        # Unchanged labels and error counts keep the previous objects: a poll then leaves
        # behind no new long-lived objects but the snapshot itself.
        labels = previous.labels if previous.labels == account.labels else _frozen(account.labels)
        errors = previous.errors_total
        requests = previous.requests_total
        dropped = 0
        failed: list[ApiError] = []
        succeeded = False
        for outcome in outcomes:
            result = outcome.result
            requests += result.attempts
            if result.failures:
                counts = dict(errors)
                for reason in result.failures:
                    counts[reason] = counts.get(reason, 0) + 1
                errors = MappingProxyType(counts)
            if result.rows is not None:
                succeeded = True
                rows, dropped_here = self._cap_sources(account.name, result.rows)
                dropped = max(dropped, dropped_here)
                figures[outcome.window.name] = WindowFigures(
                    outcome.window.name, rows, result.fetched_at, outcome.date_from, outcome.date_to
                ).pack()
            elif result.error is not None:
                failed.append(result.error)
        up = not failed
        active = previous.active
        if any(e.reason is ApiErrorReason.ACCOUNT_INACTIVE for e in failed):
            active = False
        elif succeeded:
            active = True
        # The most telling failure: a permanent one (key, inactive) outranks a passing one.
        main_error = next((e for e in failed if not e.transient), failed[-1] if failed else None)
        return replace(
            previous,
            labels=labels,
            interval=account.interval,
            stale_after=account.stale_after,
            windows=tuple(w.name for w in account.windows),
            polled=True,
            up=up,
            active=active,
            packed_figures=tuple(figures.values()),
            last_success=finished if up else previous.last_success,
            poll_duration=time.monotonic() - started,
            last_error=main_error.reason if main_error else None,
            last_error_message=main_error.message if main_error else "",
            requests_total=requests,
            errors_total=errors,
            dropped_sources=dropped,
        )

    @staticmethod
    def _log_transition(previous: AccountSnapshot, current: AccountSnapshot) -> None:
        fields: dict[str, object] = {"account": current.name}
        if current.up and (not previous.polled or not previous.up):
            if previous.polled:
                log.info("account recovered", extra=fields)
            else:  # at info, thousands of accounts would log thousands of lines at start-up
                log.debug("account polled successfully", extra=fields)
        elif not current.up and (
            previous.up or not previous.polled or previous.last_error != current.last_error
        ):
            fields.update(reason=str(current.last_error), error=current.last_error_message)
            log.warning(
                "account down"
                if previous.up or not previous.polled
                else "account failure reason changed",
                extra=fields,
            )

    # -- scheduling ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling: the first poll of every account at once, as far as admission allows.

        After the first poll, each account keeps a stable phase within its interval, so the API
        sees a steady rate instead of every account at once.
        """
        self._running = True
        now = time.monotonic()
        self._first_round_started = now
        for name in self._accounts:
            self._enter(name, now)
        self._scheduler = asyncio.create_task(self._schedule(), name="poll scheduler")

    def _enter(self, name: str, epoch: float) -> None:
        self._epochs[name] = epoch
        self._slots.pop(name, None)
        self._plan(name, epoch)

    def _plan(self, name: str, at: float) -> None:
        ticket = next(self._next_ticket)
        self._tickets[name] = ticket
        heapq.heappush(self._due, (at, ticket, name))
        self._wake.set()

    async def _schedule(self) -> None:
        """Start every due poll that admission allows; sleep until the next one is due."""
        loop = asyncio.get_running_loop()

        def admitted() -> int:
            return _ADMITTED * self._limit_size

        while True:
            self._wake.clear()
            now = time.monotonic()
            while self._due and self._due[0][0] <= now and len(self._polls) < admitted():
                _, ticket, name = heapq.heappop(self._due)
                if self._tickets.get(name) != ticket or name in self._polls:
                    continue  # removed or planned again since; or its poll is still running
                wait = self._not_before.pop(name, 0.0) - self._clock()
                if wait > 0:  # the API asked for a pause (Retry-After)
                    self._plan(name, now + wait)
                    continue
                self._polls[name] = asyncio.create_task(self._run_poll(name), name=f"poll {name}")
            timer = None
            if self._due and len(self._polls) < admitted():
                timer = loop.call_at(
                    loop.time() + max(0.0, self._due[0][0] - time.monotonic()), self._wake.set
                )
            await self._wake.wait()  # the next due time, a poll ended, or accounts were added
            if timer is not None:
                timer.cancel()

    async def _run_poll(self, name: str) -> None:
        try:
            account = self._accounts.get(name)
            if account is None:
                return
            try:
                await self.poll(account)
            except Exception:  # a bug must not stop the account's polling: log it, count it
                self.internal_errors += 1
                log.exception("unexpected error while polling", extra={"account": name})
            account = self._accounts.get(name)  # a reload may have changed or removed it
            if account is not None:
                self._plan_next(name, account.interval)
        finally:
            if self._polls.get(name) is asyncio.current_task():
                del self._polls[name]
            self._wake.set()

    def _plan_next(self, name: str, interval: float) -> None:
        epoch = self._epochs.pop(name, None)
        if epoch is not None:  # after the first poll: the account's own phase in the interval
            slot = epoch + interval * (0.5 + phase(name))
        else:
            slot = self._slots.get(name, time.monotonic()) + interval
        now = time.monotonic()
        if slot < now:  # the poll overran its slot: skip the missed ones, do not catch up
            slot += math.ceil((now - slot) / interval) * interval
        self._slots[name] = slot
        jitter = self._config.polling.jitter
        at = slot + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        self.next_poll[name] = self._clock() + max(0.0, at - now)
        self._plan(name, at)

    async def poll_all_once(self) -> list[AccountSnapshot]:
        """Poll every account once, concurrently (``--once``)."""
        return list(await asyncio.gather(*(self.poll(a) for a in self._config.accounts)))

    def healthy(self) -> bool:
        """Polling has started and its scheduler is running."""
        return self._scheduler is not None and not self._scheduler.done()

    def ready(self) -> bool:
        """Every account has been polled at least once (kept as a set: probes come often)."""
        return not self._unpolled

    # -- reload --------------------------------------------------------------------------------

    @property
    def client(self) -> TrafficSourceClient:
        """The client new requests go through (a reload may replace it)."""
        return self._client

    def apply(
        self, config: Config, client: TrafficSourceClient | None = None
    ) -> Mapping[str, list[str]]:
        """Switch to a new, already validated config without losing state.

        Added accounts start polling, removed ones stop and vanish from the store, unchanged ones
        keep their data and schedule; a changed key or window list is used from the next request.
        """
        old = self._accounts
        new = {a.name: a for a in config.accounts}
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        changed = [n for n in new if n in old and new[n] != old[n]]
        self._config = config
        self._accounts = new
        if client is not None:
            self._client = client
        if config.api.max_concurrency != self._limit_size:
            self._limit = asyncio.Semaphore(config.api.max_concurrency)
            self._admission = asyncio.Semaphore(_ADMITTED * config.api.max_concurrency)
            self._limit_size = config.api.max_concurrency
        for name in removed:
            task = self._polls.pop(name, None)
            if task is not None:
                task.cancel()
            for state in (self._tickets, self._epochs, self._slots):
                state.pop(name, None)
            self._unpolled.discard(name)
            self._store.remove(name)
            self._not_before.pop(name, None)
            self.next_poll.pop(name, None)
        self._sum_up_first_round()  # the last ones not yet polled may have been removed
        for name in changed:
            snapshot = self._store.get(name)
            if snapshot is not None:
                account = new[name]
                self._store.put(
                    replace(
                        snapshot,
                        labels=_frozen(account.labels),
                        interval=account.interval,
                        stale_after=account.stale_after,
                        windows=tuple(w.name for w in account.windows),
                    )
                )
        for name in added:
            self._store.put(initial_snapshot(new[name]))
            self._unpolled.add(name)
        if self._running:
            now = time.monotonic()
            for name in added:
                self._enter(name, now)
        self._wake.set()  # the admission limit may have changed too
        return {"added": added, "removed": removed, "changed": changed}

    async def stop(self) -> None:
        """Cancel the scheduler and every poll under way, and wait for them to end."""
        self._running = False
        tasks = [*self._polls.values()]
        if self._scheduler is not None:
            tasks.append(self._scheduler)
        self._polls.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
