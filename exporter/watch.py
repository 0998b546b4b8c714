"""Reloading without a signal, and the thread in which the configuration's files are read.

``--config.auto-reload-interval`` (default 10s, 0 turns it off), like Prometheus's
``--config.auto-reload-interval``: every interval the watcher runs its check (the daemon's:
has anything the last load read changed by content? then reload). It waits on the injected
clock, so tests move time instead of sleeping.

Reading thousands of files, hashing and parsing them takes far longer than the event loop may
be held, so that work runs in :class:`ConfigThread`, one thread per daemon, and only its result
(an immutable ``Config``) is applied on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from exporter.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_AUTO_RELOAD_INTERVAL = 10.0

T = TypeVar("T")


class ConfigWatcher:
    """Awaits ``check`` every ``interval`` seconds: a check under way delays the next one."""

    def __init__(
        self, interval: float, check: Callable[[], Awaitable[object]], clock: Clock
    ) -> None:
        self.interval = interval
        self._check = check
        self._clock = clock

    async def run(self) -> None:
        """Wait, check; until cancelled."""
        while True:
            await self._clock.sleep(self.interval)
            try:
                await self._check()
            except Exception:  # a bug here must not end the watching: logged with its traceback
                log.exception("unexpected error while watching the configuration files")


class ConfigThread:
    """One worker thread for the configuration's file work (stat, read, hash, parse, check).

    One thread, so the work submitted runs one piece at a time, in order: the loader's caches
    (``ConfigSource``'s digests, parsed files, last good accounts) belong to this thread, even
    when the task that awaited a piece was cancelled and another piece is already queued.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config")

    async def run(self, work: Callable[[], T]) -> T:
        """``work()``'s result (or exception), computed in the thread while the loop runs on.

        Cancelling the caller drops the result; work already started finishes in the thread.
        """
        return await asyncio.wrap_future(self._executor.submit(work))

    def close(self) -> None:
        """Drop queued work; a piece under way finishes on its own and nobody waits for it."""
        self._executor.shutdown(wait=False, cancel_futures=True)
