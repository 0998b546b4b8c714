"""The naive baseline: what a typical Python exporter does on every scrape.

It polls every account of the same configuration once, with the exporter's own poller, client
and snapshot types, then serves ``/metrics`` by calling ``prometheus_client.generate_latest`` on a
custom collector that builds fresh metric families from the snapshots on every collect (the
pattern of ``docs/content/collector/custom.md``), and gzips the whole output per scrape when asked,
as ``prometheus_client``'s own HTTP handler does. Same data, same names, same HELP texts: only the
rendering strategy differs from the exporter's cached exposition.

``python -m bench.naive --config.file PATH --port N`` (started by the harness).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import metrics
from exporter.client import ApiErrorReason, TrafficSourceClient
from exporter.config import load_config
from exporter.poller import Poller
from exporter.store import SnapshotStore


class SnapshotCollector(Collector):
    """Builds every account family from the store's snapshots on each collect."""

    def __init__(self, store: SnapshotStore, interval: float) -> None:
        self._store = store
        self._interval = interval

    def _family(
        self, family: metrics.Family, labels: list[str]
    ) -> CounterMetricFamily | GaugeMetricFamily:
        text = metrics.polled_help(family, self._interval)
        if family.type == "counter":
            return CounterMetricFamily(family.name, text, labels=labels)
        return GaugeMetricFamily(family.name, text, labels=labels)

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        snapshots = self._store.snapshots()
        traffic = ["account", "source_name", "window"]
        for family, value in metrics.TRAFFIC_FIELDS:
            out = self._family(family, traffic)
            for s in snapshots:
                for figures in s.visible_figures(now):
                    for row in figures.rows:
                        out.add_metric([s.name, row.source_name, figures.window], value(row))
            yield out
        simple = ["account"]
        up = self._family(metrics.UP, simple)
        active = self._family(metrics.ACTIVE, simple)
        requests = self._family(metrics.REQUESTS, simple)
        errors = self._family(metrics.ERRORS, ["account", "reason"])
        last = self._family(metrics.LAST_SUCCESS, simple)
        duration = self._family(metrics.POLL_DURATION, simple)
        interval = self._family(metrics.POLL_INTERVAL, simple)
        dropped = self._family(metrics.DROPPED_SOURCES, simple)
        info_labels = sorted({k for s in snapshots for k in s.labels})
        info = self._family(metrics.ACCOUNT_INFO, ["account", *info_labels])
        for s in snapshots:
            if s.polled:
                up.add_metric([s.name], int(s.up))
                dropped.add_metric([s.name], s.dropped_sources)
            if s.active is not None:
                active.add_metric([s.name], int(s.active))
            requests.add_metric([s.name], s.requests_total)
            for reason in ApiErrorReason:
                errors.add_metric([s.name, str(reason)], s.errors_total.get(reason, 0))
            if s.last_success is not None:
                last.add_metric([s.name], s.last_success)
            if s.poll_duration is not None:
                duration.add_metric([s.name], s.poll_duration)
            interval.add_metric([s.name], s.interval)
            info.add_metric([s.name, *(s.labels.get(k, "") for k in info_labels)], 1)
        yield from (up, active, requests, errors, last, duration, interval, info, dropped)


async def serve(config_file: str, port: int) -> None:
    config = load_config(config_file)
    store = SnapshotStore()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(store, config.polling.interval))
    ready = asyncio.Event()

    async def scrape(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        headers = {"Content-Type": metrics.CONTENT_TYPE}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def is_ready(request: web.Request) -> web.Response:
        return web.Response(status=200 if ready.is_set() else 503)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/-/ready", is_ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with TrafficSourceClient(
        config.api.url, timeout=config.api.timeout, user_agent="naive-baseline"
    ) as client:
        await Poller(config, client, store).poll_all_once()
    ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive")
    parser.add_argument("--config.file", dest="config_file", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.config_file, args.port))


if __name__ == "__main__":
    main()
