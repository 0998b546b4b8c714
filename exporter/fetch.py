"""What a poll does: request an account's windows, retrying transient failures.

Transient failures are retried with exponential back-off and full jitter, honouring
``Retry-After`` for every request of the account; permanent ones are not. Every wait is on the
injected ``Clock``. The backfill sends its requests through ``fetch_with_retries`` too.

Each attempt is sent with ``client().fetch(...)``: ``client`` is whoever provides the client in
use at that moment (the poller's, which a reload may replace between attempts; the backfill's
one client), so a retry after a reload goes through the new client.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import AccountConfig, RestKey, RetryConfig
from exporter.errors import ApiError, ApiErrorReason
from exporter.traffic import TrafficRow
from exporter.window import Window

log = logging.getLogger("exporter.poller")  # one logger for everything a poll says


class FetchResult(NamedTuple):
    """One window fetched with retries: the rows, or the last error, and what it took."""

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

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._until = 0.0  # on clock.monotonic()

    def hold(self, seconds: float) -> None:
        """No request may be sent for ``seconds`` from now (a longer earlier hold stays)."""
        self._until = max(self._until, self._clock.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds until requests may be sent again (0.0 if they may now)."""
        return max(0.0, self._until - self._clock.monotonic())


class Fetcher(Protocol):
    """What sends one request: a ``TrafficSourceClient`` (or a test's stand-in for one)."""

    async def fetch(
        self, key: RestKey, date_from: int, date_to: int
    ) -> tuple[TrafficRow, ...]: ...  # pragma: no cover


ClientProvider = Callable[[], Fetcher]  # the client to send an attempt through, at that moment


class RequestLimit:
    """At most ``size`` requests under way at once, for the whole process; waiters go in turn.

    One object for the life of the poller: a reload resizes it in place, so requests started
    under the old size and those under the new one are counted together, never side by side
    (``asyncio.Semaphore`` cannot be resized; replacing it would let both run at once).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def resize(self, size: int) -> None:
        """The new bound: no request starts while ``size`` or more are under way."""
        self.size = size
        self._admit()

    def _admit(self) -> None:
        """Let waiters in, first come first served, while there is room."""
        while self._waiters and self._in_use < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter has left
                self._in_use += 1  # counted for it now: its slot is taken, none other can be
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        if self._in_use < self.size and not self._waiters:
            self._in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # let in, then cancelled: give back
                self._in_use -= 1
                self._admit()
            raise

    async def __aexit__(self, *_: object) -> None:
        self._in_use -= 1
        self._admit()


def backoff(retries: RetryConfig, attempt: int, rng: random.Random) -> float:
    """The wait after failed attempt number ``attempt`` (from 1): full jitter under the cap."""
    cap = min(retries.max_backoff, retries.initial_backoff * 2 ** (attempt - 1))
    return rng.uniform(0, cap)


async def fetch_with_retries(
    client: ClientProvider,
    key: RestKey,
    date_from: int,
    date_to: int,
    *,
    retries: RetryConfig,
    limit: AbstractAsyncContextManager[object],
    give_up_at: float,
    clock: Clock,
    rng: random.Random,
    gate: RetryAfterGate | None = None,
) -> FetchResult:
    """Request one window; retry transient failures with exponential back-off and full jitter.

    Shared by the poller and the backfill, so both send requests the same way: every attempt
    goes through ``client()``, the client in use when it is sent, and holds a slot of ``limit``
    (the process-wide concurrency limit), ``Retry-After`` is honoured
    (no request is sent before it has elapsed; pass one ``gate`` for all requests of an account),
    permanent errors are not retried, and no retry starts after ``give_up_at`` (on the clock's
    ``monotonic()``).
    """
    gate = gate or RetryAfterGate(clock)
    failures: list[ApiErrorReason] = []
    error: ApiError | None = None
    attempt = 0
    while True:
        wait = gate.remaining()
        if wait > 0:
            if clock.monotonic() + wait > give_up_at:
                # Another request of the account was told to wait past this poll's budget.
                error = error or ApiError(
                    ApiErrorReason.RATE_LIMITED, "not sent: the API asked to wait (Retry-After)"
                )
                return FetchResult(None, error, attempt, failures, 0.0, clock.time() + wait)
            await clock.sleep(wait)
            continue
        try:
            async with limit:
                if gate.remaining() > 0:
                    continue  # told to wait while this request queued for a slot
                attempt += 1
                rows = await client().fetch(key, date_from, date_to)
        except ApiError as failed:
            error = failed
            failures.append(failed.reason)
            if failed.retry_after is not None:
                gate.hold(failed.retry_after)
            not_before = clock.time() + gate.remaining()
            if not failed.transient or attempt >= retries.attempts:
                return FetchResult(None, failed, attempt, failures, 0.0, not_before)
            delay = backoff(retries, attempt, rng)  # the gate adds any Retry-After wait
            if clock.monotonic() + max(delay, gate.remaining()) > give_up_at:
                return FetchResult(None, failed, attempt, failures, 0.0, not_before)
            await clock.sleep(delay)
            continue
        now = clock.time()
        return FetchResult(rows, None, attempt, failures, now, now + gate.remaining())


class WindowOutcome(NamedTuple):
    """One window of a poll: the bounds asked for and what came of it."""

    window: Window
    date_from: int
    date_to: int
    result: FetchResult


class AccountFetch(NamedTuple):
    """How one poll sends its requests: the shared limit, retries and sources of time."""

    client: ClientProvider
    retries: RetryConfig
    limit: RequestLimit
    end_offset: float
    clock: Clock
    rng: random.Random


async def fetch_windows(how: AccountFetch, account: AccountConfig) -> list[WindowOutcome]:
    """Every window of the account, concurrently (a task each), in the order configured.

    A ``Retry-After`` for one window holds back all of them. Retries end by half the interval,
    so polls never pile up. If this is cancelled, or a window fails with an unexpected error,
    the other windows' requests are cancelled too.
    """
    now = how.clock.time()
    gate = RetryAfterGate(how.clock)
    give_up_at = how.clock.monotonic() + account.interval / 2
    tasks = [
        asyncio.create_task(_fetch_window(how, account, window, now, gate, give_up_at))
        for window in account.windows
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:  # gather cancels them when it is cancelled, not when one fails
            task.cancel()
        raise


async def _fetch_window(
    how: AccountFetch,
    account: AccountConfig,
    window: Window,
    now: float,
    gate: RetryAfterGate,
    give_up_at: float,
) -> WindowOutcome:
    date_from, date_to = window.bounds(now, how.end_offset)
    result = await fetch_with_retries(
        how.client,
        account.rest_key,
        date_from,
        date_to,
        retries=how.retries,
        limit=how.limit,
        give_up_at=give_up_at,
        clock=how.clock,
        rng=how.rng,
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
    return WindowOutcome(window, date_from, date_to, result)
