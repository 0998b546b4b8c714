"""Sending a plan's requests through the live path: the poller's ``fetch_with_retries``,
the same concurrency limit, retries, back-off and Retry-After."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from exporter.backfill.plan import Plan, Point, Request, Result
from exporter.backfill.state import StateFile
from exporter.client import TrafficSourceClient
from exporter.clock import SystemClock
from exporter.config import Config
from exporter.errors import ApiError, ApiErrorReason
from exporter.fetch import fetch_with_retries
from exporter.snapshot import cap_sources
from exporter.traffic import TrafficRow

# After these the account's remaining requests would fail the same way: they are not sent.
_ACCOUNT_STOPPERS = frozenset({ApiErrorReason.INVALID_KEY, ApiErrorReason.ACCOUNT_INACTIVE})


class Progress(Protocol):
    """The part of a tqdm progress bar that a run uses."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> object: ...

    def close(self) -> object: ...


class NoProgress:
    """No progress bar (standard error is not a terminal, or a test)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    """What a run did: every point's result, and the requests not sent."""

    results: dict[Point, Result]
    requests_sent: int = 0  # API requests, retries included
    failed_requests: int = 0
    not_sent: dict[str, int] = dataclasses.field(default_factory=dict)  # account → requests
    stopped: dict[str, ApiError] = dataclasses.field(default_factory=dict)  # account → why


async def execute(
    plan: Plan,
    config: Config,
    client: TrafficSourceClient,
    *,
    state: StateFile | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> Outcome:
    """Send the plan's requests, at most ``api.max_concurrency`` at a time, like the poller.

    After an invalid key or an inactive account, that account's remaining requests are not sent
    (they would fail the same way); a later run with ``--resume`` tries them again.
    """
    rng = rng or random.Random()  # back-off jitter, not cryptography
    bar: Progress = progress or NoProgress()
    limit = asyncio.Semaphore(config.api.max_concurrency)
    waits = SystemClock(clock)  # real waits; window bounds and Retry-After dates on ``clock``
    outcome = Outcome(results=dict(plan.known))
    not_before: dict[str, float] = {}
    pending: Iterator[Request] = iter(plan.requests)

    def record(result: Result) -> None:
        outcome.results[result.point] = result
        if state is not None:
            state.append(result)

    async def worker() -> None:
        for request in pending:  # one shared iterator: each request is taken by one worker
            name = request.account.name
            if name in outcome.stopped:
                outcome.not_sent[name] = outcome.not_sent.get(name, 0) + 1
                bar.update()
                continue
            wait = not_before.get(name, 0.0) - clock()
            if wait > 0:  # the API asked this account to slow down (Retry-After)
                await asyncio.sleep(wait)
            fetched = await fetch_with_retries(
                lambda: client,  # one client for the whole run
                request.account.rest_key,
                request.date_from,
                request.date_to,
                retries=config.api.retries,
                limit=limit,
                give_up_at=math.inf,  # no poll interval to stay within; attempts bound it
                clock=waits,
                rng=rng,
            )
            outcome.requests_sent += fetched.attempts
            if fetched.not_before:
                not_before[name] = max(not_before.get(name, 0.0), fetched.not_before)
            for result in _results(request, fetched.rows, fetched.error, config):
                record(result)
            if fetched.rows is None and (error := fetched.error) is not None:
                outcome.failed_requests += 1
                if error.reason in _ACCOUNT_STOPPERS and name not in outcome.stopped:
                    outcome.stopped[name] = error
                bar.set_postfix_str(f"errors={outcome.failed_requests}", refresh=False)
            bar.update()

    workers = max(1, min(config.api.max_concurrency, len(plan.requests)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcome


def _results(
    request: Request, rows: tuple[TrafficRow, ...] | None, error: ApiError | None, config: Config
) -> list[Result]:
    """What every point the request answers gets: the rows (capped), or why it failed."""
    if rows is not None:
        capped, _ = cap_sources(rows, config.max_sources_per_account)
        return [Result(p, request.date_from, request.date_to, capped) for p in request.points]
    if error is None:
        return []
    reason, message = str(error.reason), error.message
    return [
        Result(p, request.date_from, request.date_to, None, reason, message) for p in request.points
    ]
