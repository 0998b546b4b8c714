"""Reloading without a signal: the configuration's files checked for changes every interval.

``--config.auto-reload-interval`` (default 10s, 0 turns it off), like Prometheus's
``--config.auto-reload-interval``: every interval the watcher asks whether anything the last load
read has changed by content (``ConfigSource.changed``) and reloads only then. It waits on the
injected clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from exporter.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_AUTO_RELOAD_INTERVAL = 10.0


class ConfigWatcher:
    """Calls ``reload`` whenever ``changed()`` says so, checking every ``interval`` seconds."""

    def __init__(
        self,
        interval: float,
        changed: Callable[[], bool],
        reload: Callable[[], Awaitable[object]],
        clock: Clock,
    ) -> None:
        self.interval = interval
        self._changed = changed
        self._reload = reload
        self._clock = clock

    async def run(self) -> None:
        """Check, reload if needed, wait; until cancelled."""
        while True:
            await self._clock.sleep(self.interval)
            try:
                if self._changed():
                    log.info("configuration files changed, reloading")
                    await self._reload()
            except Exception:  # a bug here must not end the watching: logged with its traceback
                log.exception("unexpected error while watching the configuration files")
