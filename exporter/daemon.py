"""The daemon's life: start the poller and the web server, reload the configuration, stop.

:class:`Daemon` wires the pieces together once (store, poller, web application, optional
event-loop lag monitor) and then offers the three steps of their life, each on its own:
:meth:`Daemon.start`, :meth:`Daemon.reload` and :meth:`Daemon.stop`. The command line decides
where the configuration comes from and when to stop (:meth:`Daemon.wait` returns on SIGTERM or
SIGINT).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from aiohttp import web

from exporter import __version__, eventloop
from exporter.client import TrafficSourceClient
from exporter.config import Config
from exporter.looplag import LoopLagMonitor
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.selfmetrics import SelfMetrics
from exporter.web import Runtime, make_app
from exporter.webconfig import WebConfig, WebGuard
from exporter.yamlcheck import ConfigError

log = logging.getLogger("exporter")

DEMO_RELOAD = "demo mode: the built-in configuration has nothing to reload"


class Daemon:
    """The running exporter: polls the accounts of ``config`` and serves what it found.

    ``load`` reads the configuration again for a reload (``None``: there is nothing to re-read,
    as in the demo); it raises :class:`ConfigError` when the file is bad.
    """

    def __init__(
        self,
        config: Config,
        *,
        load: Callable[[], Config] | None,
        listen_host: str | None,
        listen_port: int,
        telemetry_path: str = "/metrics",
        shard_index: int = 0,
        shard_count: int = 1,
        web_config: WebConfig | None = None,
        loop_lag_window: float = 0.0,
    ) -> None:
        self._load = load
        self._listen = (listen_host, listen_port)
        loop_lag = LoopLagMonitor(loop_lag_window) if loop_lag_window else None
        self.self_metrics = SelfMetrics(
            shard_index=shard_index,
            shard_count=shard_count,
            loop_lag=loop_lag.max_lag if loop_lag is not None else None,
            request_timeout=config.api.timeout,
        )
        self.self_metrics.reload_success_timestamp.set(time.time())
        self.poller = Poller.for_config(config, self.self_metrics)
        self.guard = WebGuard(web_config) if web_config is not None else None
        # Clients a reload replaced, closing once their last requests are done.
        self._retiring: set[asyncio.Task[None]] = set()
        self.runtime = Runtime(
            store=self.poller.store,
            poller=self.poller,
            exposition=AccountsExposition(),
            self_metrics=self.self_metrics,
            reload=self.reload,
            telemetry_path=telemetry_path,
            guard=self.guard,
            loop_lag=loop_lag,
        )
        self._runner = web.AppRunner(make_app(self.runtime), access_log=None, handle_signals=False)
        self._reload_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._lag_task: asyncio.Task[None] | None = None
        # The loop keeps only weak references to tasks: hold each reload until it is done.
        self._reloads: set[asyncio.Task[tuple[bool, str]]] = set()

    async def start(self) -> list[str]:
        """Listen, handle signals, start polling; return the bound addresses.

        Raises ``OSError`` when the address cannot be bound (call :meth:`stop` all the same).
        """
        await self._runner.setup()
        if self.runtime.loop_lag is not None:
            self._lag_task = asyncio.create_task(self.runtime.loop_lag.run())
        host, port = self._listen
        ssl_context = self.guard.ssl_context if self.guard is not None else None
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        self._handle_signals()
        self.poller.start()
        addresses = self.addresses()
        log.info(
            "listening",
            extra={
                "address": ",".join(addresses),
                "accounts": len(self.poller.config.accounts),
                "version": __version__,
                "event_loop": eventloop.loop_name(),
                "web_config": self.guard.config.describe() if self.guard is not None else "none",
            },
        )
        return addresses

    def _handle_signals(self) -> None:
        # Installed before the "listening" line: whoever waits for it may signal at once.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_sighup)

    def _reload_on_sighup(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload on SIGHUP")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def addresses(self) -> list[str]:
        """``host:port`` (``[v6]:port``) of every socket the web server listens on."""
        out = []
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            for sock in getattr(server, "sockets", None) or []:
                host, port = sock.getsockname()[:2]
                out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    async def wait(self) -> None:
        """Return once SIGTERM or SIGINT has asked the daemon to stop."""
        await self._stopping.wait()
        log.info("shutting down")

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration and apply it; on SIGHUP and POST /-/reload.

        A bad file keeps the running configuration. Returns ``(ok, message)`` for the caller.
        """
        async with self._reload_lock:
            if self.guard is not None:  # the web config reloads by itself; a reload forces it
                self.guard.refresh(force=True)
            if self._load is None:
                return True, DEMO_RELOAD
            try:
                new = self._load()
            except ConfigError as exc:
                self.self_metrics.reload_successful.set(0)
                log.error(
                    "reload failed, keeping the running configuration", extra={"error": str(exc)}
                )
                return False, str(exc)
            await self._apply(new)
            return True, "configuration reloaded"

    async def _apply(self, new: Config) -> None:
        current = self.poller.client
        client = None if current.serves(new.api) else TrafficSourceClient.for_api(new.api)
        current.timeout = new.api.timeout  # requests from now on; a new client has it too
        changes = self.poller.apply(new, client=client)
        if client is not None:  # retired: requests under way finish on it; the reload goes on
            retiring = asyncio.create_task(current.close(), name="retire the API client")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        self.self_metrics.reload_successful.set(1)
        self.self_metrics.reload_success_timestamp.set(time.time())
        for warning in new.warnings:
            log.warning(warning)
        detail = {k: ",".join(v) for k, v in changes.items() if v}
        log.info("configuration reloaded", extra=detail)

    async def stop(self) -> None:
        """Stop polling and serving, then close the API client; safe after a failed start."""
        if self._lag_task is not None:
            self._lag_task.cancel()
        await self.poller.stop()  # cancels the polls, and so the retiring clients' requests
        await self._runner.cleanup()
        await asyncio.gather(*self._retiring, self.poller.close())
