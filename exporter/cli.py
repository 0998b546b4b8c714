"""Command line: flags, logging, exit codes and the wiring of the daemon. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from exporter import __version__, accountfiles, eventloop, logs
from exporter.accountfiles import ConfigSource
from exporter.cleartext import keys_in_clear, warn_keys_in_clear
from exporter.config import Config
from exporter.daemon import Daemon
from exporter.flags import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_common_flags,
    exit_usage,
    parse_shard_flags,
    select_shard,
)
from exporter.listener import DEFAULT_LIMITS, ListenerLimits
from exporter.metrics import AccountsExposition, render_all
from exporter.poller import Poller
from exporter.refresh import refresh_of, requests_per_day
from exporter.selfmetrics import SelfMetrics
from exporter.watch import DEFAULT_AUTO_RELOAD_INTERVAL
from exporter.webconfig import WebConfig, load_web_config
from exporter.window import Window
from exporter.yamlcheck import ConfigError, format_duration, parse_duration

log = logging.getLogger("exporter")

DEFAULT_PORT = 9817
PROG = "retargeting-exporter"


@dataclass(frozen=True)
class Options:
    """What the daemon's command line asked for, validated."""

    config_file: str
    listen_host: str | None
    listen_port: int
    telemetry_path: str
    log_level: str
    log_format: str
    check: bool
    once: bool
    demo: bool
    demo_interval: float
    shard_count: int
    shard_index: int
    web_config_file: str | None = None
    loop_lag_window: float = 0.0  # --debug.loop-lag; 0: not measured
    listener: ListenerLimits = DEFAULT_LIMITS
    auto_reload_interval: float = DEFAULT_AUTO_RELOAD_INTERVAL  # 0: the files are not watched


def build_parser() -> argparse.ArgumentParser:
    """The daemon's flags (``retargeting-exporter --help``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prometheus exporter for the Retargeting.biz Traffic Source partners API.",
        epilog="Other command: `retargeting-exporter backfill --help` writes past windows as "
        "OpenMetrics for promtool (docs/backfill.md).",
    )
    add = parser.add_argument
    add_common_flags(parser)
    add(
        "--web.listen-address",
        dest="listen",
        default=f":{DEFAULT_PORT}",
        metavar="[HOST]:PORT",
        help="address to serve the status page and metrics on (default: %(default)s)",
    )
    add(
        "--web.config.file",
        dest="web_config_file",
        default="",
        metavar="PATH",
        help="exporter-toolkit web configuration: TLS, basic auth, response headers; "
        "re-read when it changes (default: none, plain HTTP without authentication)",
    )
    _add_listener_flags(parser)
    add(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics endpoint (default: %(default)s)",
    )
    add(
        "--config.check",
        dest="check",
        action="store_true",
        help="validate the configuration, print a summary without secrets, exit 0 or 2",
    )
    add(
        "--config.auto-reload-interval",
        dest="auto_reload_interval",
        default=format_duration(DEFAULT_AUTO_RELOAD_INTERVAL),
        metavar="DURATION",
        help="check the configuration file, its account files and rest_key_files for changes "
        "this often and reload when their content changed; 0s turns it off (SIGHUP and "
        "POST /-/reload always work) (default: %(default)s)",
    )
    add(
        "--once",
        action="store_true",
        help="poll every account once, print the metrics to stdout, exit 0 if all succeeded",
    )
    add(
        "--demo",
        action="store_true",
        help="run against a built-in simulated API with demo accounts (no key, no network)",
    )
    add(
        "--demo.interval",
        dest="demo_interval",
        default="30s",
        metavar="DURATION",
        help="polling interval in --demo mode, may be below 30s (default: %(default)s)",
    )
    add(
        "--debug.loop-lag",
        dest="loop_lag",
        default="",
        metavar="WINDOW",
        help="measure event-loop lag and export retargeting_exporter_event_loop_lag_seconds, "
        "the longest lag within the last WINDOW, e.g. 1m (default: off; used by the benchmarks)",
    )
    add(
        "--version",
        action="version",
        version=f"retargeting-exporter {__version__} (python {platform.python_version()})",
    )
    return parser  # fmt: skip


def _add_listener_flags(parser: argparse.ArgumentParser) -> None:
    """What the listener bounds (exporter/listener.py, SECURITY.md "Connection floods")."""
    add = parser.add_argument
    add(
        "--web.read-header-timeout",
        dest="read_header_timeout",
        default="1m",
        metavar="DURATION",
        help="close a connection whose request line and headers have not all arrived within "
        "DURATION of its opening (or of the first byte after a response); 0 turns it off "
        "(default: %(default)s, as exporter-toolkit)",
    )
    add(
        "--web.max-connections-per-client",
        dest="max_per_client",
        default=str(ListenerLimits.max_connections_per_client),
        metavar="N",
        help="open connections one client address may hold; more are closed at once; "
        "0: no limit (default: %(default)s)",
    )
    add(
        "--web.max-connections",
        dest="max_connections",
        default="auto",
        metavar="N",
        help="open client connections in all; more are closed at once; 0: no limit "
        "(default: %(default)s, what the open-files limit leaves beside polling)",
    )


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """``:9817`` (all interfaces), ``127.0.0.1:9817``, ``[::1]:9817``."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise UsageError(f"--web.listen-address {text!r}: expected [IPv6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise UsageError(f"--web.listen-address {text!r}: expected [HOST]:PORT, e.g. :9817")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--web.listen-address {text!r}: port must be a number from 0 to 65535")
    return host or None, int(port)


def parse_options(argv: Sequence[str] | None) -> Options:
    """Parse and check the flags; ``UsageError`` names the first bad one."""
    args = build_parser().parse_args(argv)
    host, port = parse_listen_address(args.listen)
    path = args.telemetry_path
    if not path.startswith("/") or path == "/" or path.startswith("/-/"):
        raise UsageError(f"--web.telemetry-path {path!r}: must start with / and not be / or /-/…")
    try:
        demo_interval = parse_duration(args.demo_interval)
    except ValueError as exc:
        raise UsageError(f"--demo.interval: {exc}") from None
    if demo_interval < 1:
        raise UsageError("--demo.interval: must be at least 1s")
    count, index = parse_shard_flags(args)
    loop_lag_window = 0.0
    if args.loop_lag:
        try:
            loop_lag_window = parse_duration(args.loop_lag)
        except ValueError as exc:
            raise UsageError(f"--debug.loop-lag: {exc}") from None
        if loop_lag_window < 0.1:
            raise UsageError("--debug.loop-lag: the window must be at least 100ms")
    listener = _parse_listener_flags(args)
    auto_reload = _off_or_at_least("--config.auto-reload-interval", args.auto_reload_interval, 0.1)
    if args.demo and args.check:
        raise UsageError("--demo and --config.check cannot be combined")
    return Options(
        config_file=args.config_file,
        listen_host=host,
        listen_port=port,
        telemetry_path=path,
        log_level=args.log_level,
        log_format=args.log_format,
        check=args.check,
        once=args.once,
        demo=args.demo,
        demo_interval=demo_interval,
        shard_count=count,
        shard_index=index,
        web_config_file=args.web_config_file or None,
        loop_lag_window=loop_lag_window,
        listener=listener,
        auto_reload_interval=auto_reload,
    )


def _count(flag: str, text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{flag} {text!r}: must be a whole number, 0 for no limit")
    return int(text)


def _off_or_at_least(flag: str, text: str, minimum: float) -> float:
    """A duration flag whose 0 turns something off; any other value is at least ``minimum``."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if 0 < seconds < minimum:
        raise UsageError(f"{flag}: must be 0 (off) or at least {format_duration(minimum)}")
    return seconds


def _parse_listener_flags(args: argparse.Namespace) -> ListenerLimits:
    deadline = _off_or_at_least("--web.read-header-timeout", args.read_header_timeout, 1.0)
    total = None
    if args.max_connections != "auto":
        total = _count("--web.max-connections", args.max_connections)
    per_client = _count("--web.max-connections-per-client", args.max_per_client)
    return ListenerLimits(deadline, per_client, total)


def summary(config: Config, options: Options, source: ConfigSource | None = None) -> str:
    """``--config.check`` output: everything that matters, no secrets."""
    p = config.polling
    lines = [
        f"configuration {config.source} is valid",
        f"api: url={config.api.url} timeout={format_duration(config.api.timeout)} "
        f"max_concurrency={config.api.max_concurrency} retries={config.api.retries.attempts} "
        f"proxy={config.api.proxy_url or 'from the environment'}",
        f"polling: interval={format_duration(p.interval)} jitter={format_duration(p.jitter)} "
        f"stale_after={format_duration(p.stale_after)} end_offset={format_duration(p.end_offset)}",
        f"windows: {', '.join(_window_text(w, p.interval) for w in config.windows)}",
        f"max_sources_per_account: {config.max_sources_per_account}",
    ]
    selected = select_shard(config, options.shard_count, options.shard_index)
    shard = ""
    if options.shard_count > 1:
        shard = f", {len(selected.accounts)} in shard {options.shard_index}/{options.shard_count}"
    lines.append(f"accounts: {len(config.accounts)}{shard}")
    mine = {a.name for a in selected.accounts}
    for a in config.accounts:
        labels = " ".join(f"{k}={v}" for k, v in sorted(a.labels.items())) or "-"
        skipped = "" if a.name in mine else "  (other shard)"
        windows = ",".join(_window_text(w, a.interval) for w in a.windows)
        lines.append(
            f"  - {a.name}: key from {a.key_source}; windows {windows}; "
            f"every {format_duration(a.interval)}; "
            f"{_per_day(requests_per_day(a.windows, a.interval))} requests a day; "
            f"labels {labels}{skipped}"
        )
    if config.account_files:
        files = source.files if source is not None else []
        lines.append(f"account files: {len(files)} matching {', '.join(config.account_files)}")
        lines.extend(accountfiles.describe(files))
        if bad := [f.file for f in files if not f.ok]:
            lines.append(f"account files with problems: {', '.join(bad)}")
    total = sum(requests_per_day(a.windows, a.interval) for a in config.accounts)
    in_shard = sum(requests_per_day(a.windows, a.interval) for a in selected.accounts)
    shard_total = f", {_per_day(in_shard)} in this shard" if options.shard_count > 1 else ""
    lines.append(
        f"API requests a day: {_per_day(total)}{shard_total} (when every request succeeds; "
        "retries come on top)"
    )
    lines.extend(f"warning: {w}" for w in config.warnings)
    lines.extend(
        f"warning: account {name}: its rest key is sent in clear to {host} (api.url is http://)"
        for name, host in keys_in_clear(config).items()
    )
    return "\n".join(lines)


def _window_text(window: Window, interval: float) -> str:
    """A window as ``--config.check`` lists it: ``30d(every 1h)`` if not asked at every poll."""
    refresh = refresh_of(window, interval)
    if refresh <= interval:
        return window.name
    return f"{window.name}(every {format_duration(refresh)})"


def _per_day(requests: float) -> str:
    """Requests a day, whole unless fewer than ten."""
    return f"{requests:.0f}" if requests >= 10 or requests == int(requests) else f"{requests:.1f}"


async def run_once(config: Config, own: SelfMetrics) -> int:
    """Poll every account once and print the exposition."""
    poller = Poller.for_config(config, own)
    try:
        snapshots = await poller.poll_all_once()
    finally:
        await poller.close()
    exposition = AccountsExposition()
    sys.stdout.write(render_all(exposition, poller.store, own, time.time()).decode("utf-8"))
    sys.stdout.flush()
    failed = [s.name for s in snapshots if not s.up]
    if failed:
        log.error("some accounts failed", extra={"accounts": ",".join(failed)})
        return EXIT_FAILURE
    return EXIT_OK


async def run_daemon(
    options: Options,
    config: Config | None,
    redactor: logs.Redactor,
    web_config: WebConfig | None = None,
    source: ConfigSource | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; SIGHUP and POST /-/reload re-read the configuration."""
    async with contextlib.AsyncExitStack() as stack:
        fake_url = None
        if options.demo:
            fake_url, config = await stack.enter_async_context(_demo(options, redactor))
        if config is None:
            raise ValueError("run_daemon needs a config unless in demo mode")
        daemon = Daemon(
            config,
            load=None if source is None else _reloader(options, redactor, config, source),
            listen_host=options.listen_host,
            listen_port=options.listen_port,
            telemetry_path=options.telemetry_path,
            shard_index=options.shard_index,
            shard_count=options.shard_count,
            web_config=web_config,
            loop_lag_window=options.loop_lag_window,
            listener=options.listener,
            source=source,
            auto_reload_interval=options.auto_reload_interval,
        )
        stack.push_async_callback(daemon.stop)
        try:
            addresses = await daemon.start()
        except OSError as exc:
            where = f"{options.listen_host or ''}:{options.listen_port}"
            log.error(f"cannot listen on {where}: {exc.strerror or exc}")
            return EXIT_FAILURE
        if fake_url is not None:
            tls = daemon.guard is not None and daemon.guard.ssl_context is not None
            _print_demo_banner(addresses, fake_url, options.telemetry_path, tls=tls)
        await daemon.wait()
    return EXIT_OK


def _reloader(
    options: Options, redactor: logs.Redactor, running: Config, source: ConfigSource
) -> Callable[[], Config]:
    """How a reload reads the configuration: the file again, this replica's shard of it."""
    # Every key ever loaded stays redacted: a rotated-out key may still be valid, and keys of
    # other shards are in memory too.
    known = set(running.secrets())

    def load() -> Config:
        full = source.load()
        known.update(full.secrets())
        redactor.update(known)
        return select_shard(full, options.shard_count, options.shard_index)

    return load


@contextlib.asynccontextmanager
async def _demo(options: Options, redactor: logs.Redactor) -> AsyncIterator[tuple[str, Config]]:
    """The demo's fake API, running, and the configuration that polls it."""
    from exporter import demo, fakeapi  # only the demo needs them

    fake = fakeapi.FakeApi(fakeapi.demo_accounts())
    try:
        config = demo.demo_config(await fake.start(), options.demo_interval)
        redactor.update(config.secrets())
        yield fake.url, config
    finally:
        await fake.close()


def _print_demo_banner(addresses: list[str], api_url: str, path: str, *, tls: bool) -> None:
    port = addresses[0].rsplit(":", 1)[1] if addresses else str(DEFAULT_PORT)
    host = "127.0.0.1"
    for address in addresses:
        if not address.startswith(("0.0.0.0", "[")):  # noqa: S104 - only comparing text
            host = address.rsplit(":", 1)[0]
    base = f"{'https' if tls else 'http'}://{host}:{port}"
    print(
        "\nretargeting-exporter demo is running against a simulated Retargeting API\n"
        f"  status page: {base}/\n"
        f"  metrics:     {base}{path}\n"
        f"  fake API:    {api_url}\n"
        "Accounts: demo-fashion, demo-electronics, demo-garden (healthy), demo-inactive\n"
        "(account not active) and demo-revoked (invalid key). Press Ctrl-C to stop.\n",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["backfill"]:
        from exporter import backfill  # a separate command: the daemon need not load it

        return backfill.main(args[1:])
    try:
        options = parse_options(args)
    except UsageError as exc:
        return exit_usage(PROG, f"error: {exc}")
    redactor = logs.Redactor()
    logs.configure(options.log_level, options.log_format, redactor)
    web_config: WebConfig | None = None
    if options.web_config_file and not options.once:
        try:
            web_config = load_web_config(options.web_config_file)
        except ConfigError as exc:
            return exit_usage(PROG, f"--web.config.file: {exc}")
    config: Config | None = None
    source: ConfigSource | None = None
    if not options.demo:
        source = ConfigSource(options.config_file)
        try:
            config = source.load()
        except ConfigError as exc:
            return exit_usage(PROG, exc)
        redactor.update(config.secrets())
        if options.check:
            print(summary(config, options, source))
            if web_config is not None:
                print(f"web config {web_config.source} is valid: {web_config.describe()}")
            # Like promtool check config with file_sd files: any bad account file fails.
            return EXIT_OK if all(f.ok for f in source.files) else EXIT_USAGE
        for warning in config.warnings:
            log.warning(warning)
        config = select_shard(config, options.shard_count, options.shard_index)
        if options.shard_count > 1:
            log.info(
                "sharding",
                extra={
                    "shard_index": options.shard_index,
                    "shard_count": options.shard_count,
                    "accounts": len(config.accounts),
                },
            )
        warn_keys_in_clear(config)
    try:
        if options.once:
            if config is None:  # --demo --once: poll the demo accounts once
                return eventloop.run(_demo_once(options, redactor))
            return eventloop.run(run_once(config, _once_metrics(options, config)))
        return eventloop.run(run_daemon(options, config, redactor, web_config, source))
    except KeyboardInterrupt:
        return EXIT_OK


def _once_metrics(options: Options, config: Config) -> SelfMetrics:
    """``--once``'s exporter-wide metrics: as the daemon's at start."""
    return SelfMetrics(
        shard_index=options.shard_index,
        shard_count=options.shard_count,
        request_timeout=config.api.timeout,
    )


async def _demo_once(options: Options, redactor: logs.Redactor) -> int:
    async with _demo(options, redactor) as (_, config):
        return await run_once(config, _once_metrics(options, config))
