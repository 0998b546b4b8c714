"""The aiohttp application: status page, /metrics, health, readiness and reload endpoints."""

from __future__ import annotations

import asyncio
import html
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from exporter import __version__
from exporter.looplag import LoopLagMonitor
from exporter.metrics import CONTENT_TYPE, AccountsExposition
from exporter.poller import Poller
from exporter.selfmetrics import SelfMetrics
from exporter.store import AccountSnapshot, SnapshotStore
from exporter.webconfig import WebGuard

log = logging.getLogger(__name__)

# Probes (kubelet, load balancers) cannot send credentials: these never ask for them. Every other
# path, unknown ones included, requires them when the web config has basic_auth_users.
PROBE_PATHS = ("/-/healthy", "/-/ready")

# Pieces smaller than this are compressed inline; larger ones in a thread (zlib frees the GIL).
_INLINE_GZIP_BYTES = 256 * 1024


class GzipCache:
    """Gzip of the (large, rarely changing) accounts part, computed once per version of it.

    The part is compressed piece by piece as ``chunks`` produces it (large pieces in a thread),
    so its uncompressed whole never exists at once. The small exporter part changes every
    scrape; it is appended to a copy of the compressor state, so each response is still a
    single valid gzip member.
    """

    def __init__(self, level: int = 1) -> None:
        self._level = level
        self._version: Hashable | None = None
        self._prefix = b""
        self._compressor: zlib._Compress | None = None
        self._lock = asyncio.Lock()

    async def compress(self, version: Hashable, chunks: Iterable[bytes], tail: bytes) -> bytes:
        """Gzip of ``chunks`` + ``tail``; ``chunks`` is only read when ``version`` is new."""
        async with self._lock:
            if version != self._version or self._compressor is None:
                loop = asyncio.get_running_loop()
                compressor = zlib.compressobj(self._level, zlib.DEFLATED, 31)
                out = []
                for chunk in chunks:
                    if len(chunk) > _INLINE_GZIP_BYTES:
                        out.append(await loop.run_in_executor(None, compressor.compress, chunk))
                    else:
                        out.append(compressor.compress(chunk))
                out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
                self._version, self._prefix, self._compressor = version, b"".join(out), compressor
            finisher = self._compressor.copy()
        return self._prefix + finisher.compress(tail) + finisher.flush()


ReloadFn = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class Runtime:
    """What the handlers need, shared through one typed application key."""

    store: SnapshotStore
    poller: Poller
    exposition: AccountsExposition
    self_metrics: SelfMetrics  # the exporter-wide families, after the accounts' ones
    reload: ReloadFn
    telemetry_path: str = "/metrics"
    clock: Callable[[], float] = time.time
    gzip: GzipCache = field(default_factory=GzipCache)
    render_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one refresh at a time
    guard: WebGuard | None = None  # --web.config.file: basic auth, headers, TLS reloads
    loop_lag: LoopLagMonitor | None = None  # --debug.loop-lag


RUNTIME = web.AppKey("runtime", Runtime)


async def metrics(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    exposition = rt.exposition
    async with rt.render_lock:
        for _ in exposition.refresh(rt.store, rt.clock()):
            await asyncio.sleep(0)  # let polls and other requests run between steps
    tail = rt.self_metrics.render()
    headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = await rt.gzip.compress(exposition.version, exposition.chunks(), tail)
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)
    # Uncompressed, the body is sent family by family (chunked), never copied whole.
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    for chunk in exposition.chunks():
        await response.write(chunk)
    await response.write(tail)
    await response.write_eof()
    return response


async def healthy(request: web.Request) -> web.Response:
    if request.app[RUNTIME].poller.healthy():
        return web.Response(text="Healthy.\n")
    return web.Response(status=503, text="Unhealthy: the poll scheduler has stopped.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME].poller.ready():
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: some accounts have not been polled yet.\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = await request.app[RUNTIME].reload()
    return web.Response(status=200 if ok else 500, text=message + "\n")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _account_row(snapshot: AccountSnapshot, next_poll: float | None, now: float) -> str:
    esc = html.escape
    if not snapshot.polled:
        state, css = "pending", "pending"
    elif snapshot.up:
        state, css = "up", "up"
    else:
        state, css = "down", "down"
    active = {None: "unknown", True: "yes", False: "no"}[snapshot.active]
    last_success = _age(now - snapshot.last_success) + " ago" if snapshot.last_success else "never"
    error = ""
    if snapshot.last_error is not None:
        error = f"<code>{esc(str(snapshot.last_error))}</code> {esc(snapshot.last_error_message)}"
    upcoming = "now" if next_poll is None or next_poll <= now else "in " + _age(next_poll - now)
    return (
        f'<tr class="account {css}" data-account="{esc(snapshot.name)}">'
        f"<td>{esc(snapshot.name)}</td>"
        f'<td class="state"><span class="badge {css}">{state}</span></td>'
        f'<td class="active-{active}">{active}</td>'
        f"<td>{last_success}</td><td>{error}</td><td>{upcoming}</td></tr>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1d1d1f}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4em .7em;border-bottom:1px solid #ddd}
th{background:#f4f4f6}.badge{padding:.1em .6em;border-radius:1em;font-weight:600;color:#fff}
.badge.up{background:#1a7f37}.badge.down{background:#cf222e}.badge.pending{background:#9a6700}
tr.down{background:#ffebe9}.active-no{color:#cf222e;font-weight:600}code{font-size:90%}
"""


async def index(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    now = rt.clock()
    snapshots = rt.store.snapshots()
    rows = "\n".join(_account_row(s, rt.poller.next_poll.get(s.name), now) for s in snapshots)
    down = sum(1 for s in snapshots if s.polled and not s.up)
    shard = ""
    if rt.self_metrics.shard_count > 1:
        shard = f" · shard {rt.self_metrics.shard_index} of {rt.self_metrics.shard_count}"
    path = html.escape(rt.telemetry_path)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>Retargeting exporter</title><style>{_STYLE}</style></head>
<body><h1>Retargeting exporter</h1>
<p>Version {html.escape(__version__)}{shard} · <a href="{path}">Metrics</a> ·
<a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></p>
<p id="summary">{len(snapshots)} accounts, {down} down.</p>
<table id="accounts"><thead><tr><th>Account</th><th>State</th><th>Active</th>
<th>Last success</th><th>Last error</th><th>Next poll</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    return web.Response(text=page, content_type="text/html")


def make_app(runtime: Runtime) -> web.Application:
    """The application; ``runtime.poller`` is started and stopped by the caller."""
    app = web.Application()
    app[RUNTIME] = runtime
    if runtime.guard is not None:
        runtime.guard.install(app, open_paths=PROBE_PATHS)
    app.router.add_get("/", index)
    app.router.add_get(runtime.telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app
