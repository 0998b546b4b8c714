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
from dataclasses import replace

from aiohttp import web

from exporter import __version__, eventloop, openfiles
from exporter.accountfiles import ConfigSource
from exporter.cleartext import warn_keys_in_clear
from exporter.client import TrafficSourceClient
from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.listener import DEFAULT_LIMITS, ConnectionGuard, ListenerLimits
from exporter.looplag import LoopLagMonitor
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.selfmetrics import SelfMetrics
from exporter.watch import ConfigThread, ConfigWatcher
from exporter.web import Runtime, make_app
from exporter.webconfig import WebConfig, WebGuard
from exporter.yamlcheck import ConfigError

log = logging.getLogger("exporter")

# Connections the kernel completes before the server accepts them. Under a flood a full queue
# drops a scraper's connection attempt (retried only after a second), so it is as deep as the
# kernel allows by default (net.core.somaxconn caps it), as Go's net.Listen makes it.
_BACKLOG = 4096

DEMO_RELOAD = "demo mode: the built-in configuration has nothing to reload"
SHUTTING_DOWN = "shutting down: the configuration was not reloaded"


class Daemon:
    """The running exporter: polls the accounts of ``config`` and serves what it found.

    ``load`` reads the configuration again for a reload (``None``: there is nothing to re-read,
    as in the demo); it raises :class:`ConfigError` when the file is bad. ``source`` is where
    it reads from: its account files are exported, and with ``auto_reload_interval`` its files
    are checked for changes that often (on ``clock``) and reloaded without a signal.

    ``load`` and ``source.changed`` run in the daemon's :class:`ConfigThread`, never on the
    event loop: they may read thousands of files. ``source`` belongs to that thread; the loop
    only reads ``source.files``, which a load replaces whole. The loaded ``Config`` (frozen) is
    applied on the loop.
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
        listener: ListenerLimits = DEFAULT_LIMITS,
        source: ConfigSource | None = None,
        auto_reload_interval: float = 0.0,
        clock: Clock | None = None,
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
        if source is not None:
            self.self_metrics.account_files = lambda: [(f.file, f.ok) for f in source.files]
        clock = clock or SYSTEM_CLOCK
        self._config_thread = ConfigThread()
        self._changed = source.changed if source is not None else None
        self.watcher = None
        if source is not None and load is not None and auto_reload_interval > 0:
            self.watcher = ConfigWatcher(auto_reload_interval, self.reload_if_changed, clock)
        self._watch_task: asyncio.Task[None] | None = None
        self.poller = Poller.for_config(config, self.self_metrics, clock=clock)
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
        if source is not None:
            self.runtime.account_files = lambda: source.files
        app = make_app(self.runtime)
        self.listener = ConnectionGuard(listener, metrics=self.self_metrics)
        self.listener.install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._listening: asyncio.Server | None = None
        self._reload_lock = asyncio.Lock()  # one check or reload at a time
        self._stopping = asyncio.Event()
        self._stopped = False
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
        await self._listen_guarded()
        self._handle_signals()
        self.poller.start()
        if self.watcher is not None:
            self._watch_task = asyncio.create_task(self.watcher.run(), name="watch the config")
        addresses = self.addresses()
        log.info(
            "listening",
            extra={
                "address": ",".join(addresses),
                "accounts": len(self.poller.config.accounts),
                "version": __version__,
                "event_loop": eventloop.loop_name(),
                "web_config": self.guard.config.describe() if self.guard is not None else "none",
                "limits": self.listener.limits.describe(),
            },
        )
        return addresses

    async def _listen_guarded(self) -> None:
        # aiohttp's TCPSite cannot take a protocol factory of ours: the listening socket is
        # made here, as TCPSite makes it, with aiohttp's web.Server behind the ConnectionGuard.
        open_files = openfiles.raise_open_files_limit()
        api = self.poller.config.api.max_concurrency
        limits = self.listener.limits
        if limits.max_connections is None:
            room = open_files.room_for_clients(api)
            limits = replace(limits, max_connections=0 if room is None else max(room, 1))
            self.listener.limits = limits
        openfiles.check_room(
            open_files, api, limits.max_connections or limits.max_connections_per_client
        )
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        host, port = self._listen
        ssl_context = self.guard.ssl_context if self.guard is not None else None
        self._listening = await asyncio.get_running_loop().create_server(
            self.listener.protocol_factory(server),
            host,
            port,
            ssl=ssl_context,
            backlog=_BACKLOG,
            # The TLS handshake comes before the head: it gets the same deadline, as in Go.
            ssl_handshake_timeout=(limits.read_header_timeout or None) if ssl_context else None,
        )

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
        for sock in self._listening.sockets if self._listening is not None else ():
            host, port = sock.getsockname()[:2]
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    async def wait(self) -> None:
        """Return once SIGTERM or SIGINT has asked the daemon to stop."""
        await self._stopping.wait()
        log.info("shutting down")

    async def reload(self) -> tuple[bool, str]:
        """Re-read the configuration and apply it; on SIGHUP and POST /-/reload.

        A bad file keeps the running configuration. Returns ``(ok, message)`` for the caller,
        once the files have been read (a check under way is waited for).
        """
        async with self._reload_lock:
            return await self._reload()

    async def reload_if_changed(self) -> None:
        """The watcher's check: reload if a file the last load read has changed by content.

        Skipped while a check or reload is under way: that one reads the files anyway.
        """
        if self._changed is None or self._reload_lock.locked():
            return
        async with self._reload_lock:
            if await self._config_thread.run(self._changed) and not self._stopped:
                log.info("configuration files changed, reloading")
                await self._reload()

    async def _reload(self) -> tuple[bool, str]:
        if self._stopped:  # its config thread is closed: nothing reads or applies any more
            return False, SHUTTING_DOWN
        if self.guard is not None:  # the web config reloads by itself; a reload forces it
            self.guard.refresh(force=True)
        if self._load is None:
            return True, DEMO_RELOAD
        try:
            new = await self._config_thread.run(self._load)
        except ConfigError as exc:
            self.self_metrics.reload_successful.set(0)
            log.error("reload failed, keeping the running configuration", extra={"error": str(exc)})
            return False, str(exc)
        if self._stopped:  # stopped while the files were read: nothing left to apply it to
            return False, SHUTTING_DOWN
        await self._apply(new)
        return True, "configuration reloaded"

    async def _apply(self, new: Config) -> None:
        old = self.poller.config
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
        warn_keys_in_clear(new, old)
        detail = {k: ",".join(v) for k, v in changes.items() if v}
        log.info("configuration reloaded", extra=detail)

    async def stop(self) -> None:
        """Stop polling and serving, then close the API client; safe after a failed start.

        A check or reload reading files is not waited for: its result is dropped.
        """
        self._stopped = True
        for task in (self._lag_task, self._watch_task, *self._reloads):
            if task is not None:
                task.cancel()
        self._config_thread.close()
        await self.poller.stop()  # cancels the polls, and so the retiring clients' requests
        if self._listening is not None:
            self._listening.close()  # no new connections; the runner closes the open ones
        await self._runner.cleanup()
        await asyncio.gather(*self._retiring, self.poller.close())
