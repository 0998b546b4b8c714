"""``python -m bench.client``: the exporter's CPU per API request, layer by layer, in one process.

The full harness (``python -m bench``) measures the daemon; this splits its per-request cost.
Against the fake API (its own process, with latency), ``--requests`` GETs run ``--concurrency``
at a time through each layer in turn, and the process's CPU time is divided by the requests:

- ``aiohttp``: a bare aiohttp ``session.get`` and ``read``, for comparison (the exporter used
  aiohttp's client until its cost per request made ``exporter.http`` worth writing);
- ``http``: a bare ``exporter.http.HttpClient.get`` (the exporter's own HTTP/1.1 client);
- ``client``: ``TrafficSourceClient.fetch`` (adds the key's safe handling and the answer's parse);
- ``poller``: ``Poller.poll_all_once`` over the same number of requests (adds retries,
  snapshots, admission and the store).

Each layer runs ``--repeat`` times, interleaved, as the machine's speed drifts (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from bench.harness import free_port, process, wait_for_port
from exporter import eventloop
from exporter.cli import _client
from exporter.config import load_config
from exporter.http import HttpClient
from exporter.poller import Poller
from exporter.store import SnapshotStore

DATES = (1_700_000_000, 1_700_086_400)


def _config(path: Path, url: str, accounts: int, concurrency: int) -> Path:
    lines = [
        "api:",
        f"  url: {url}",
        f"  max_concurrency: {concurrency}",
        "windows: [24h, 30d]",
        "accounts:",
        *(f"  - {{name: shop-{i:05d}, rest_key: key-{i:05d}}}" for i in range(accounts)),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _timed(work: Callable[[], Awaitable[None]]) -> float:
    started = time.process_time()
    await work()
    return time.process_time() - started


LAYERS = ("aiohttp", "http", "client", "poller")


async def _layers(
    url: str, config_path: Path, requests: int, concurrency: int, wanted: Sequence[str]
) -> dict[str, float]:
    config = load_config(config_path)
    accounts = config.accounts
    http = HttpClient(url, user_agent="bench", max_body=1 << 20)
    async with aiohttp.ClientSession() as session, _client(config) as client:
        limit = asyncio.Semaphore(concurrency)
        keys = [accounts[i % len(accounts)].rest_key for i in range(requests)]

        async def bare(i: int) -> bytes:
            params = {"rest_key": keys[i].reveal(), "date_from": "1", "date_to": "2"}
            async with limit, session.get(url, params=params) as response:
                return await response.read()

        async def own(i: int) -> bytes:
            async with limit:
                response = await http.get(f"rest_key={keys[i].reveal()}&date_from=1&date_to=2")
                return response.body

        async def fetch(i: int) -> object:
            async with limit:
                return await client.fetch(keys[i], *DATES)

        async def all_bare() -> None:
            bodies = await asyncio.gather(*(bare(i) for i in range(requests)))
            if not all(b.startswith(b'{"status": "success"') for b in bodies):
                raise RuntimeError("a bare request was not answered with figures")

        async def all_own() -> None:
            bodies = await asyncio.gather(*(own(i) for i in range(requests)))
            if not all(b.startswith(b'{"status": "success"') for b in bodies):
                raise RuntimeError("a request was not answered with figures")

        async def all_fetch() -> None:
            await asyncio.gather(*(fetch(i) for i in range(requests)))  # raises on a failure

        async def all_polls() -> None:
            snapshots = await Poller(config, client, SnapshotStore()).poll_all_once()
            if not all(s.up for s in snapshots):
                raise RuntimeError("a poll failed")

        runs = {"aiohttp": all_bare, "http": all_own, "client": all_fetch, "poller": all_polls}
        await all_fetch()  # warm: connections open, code paths run once
        await all_own()
        if "aiohttp" in wanted:
            await all_bare()
        layers = {layer: await _timed(runs[layer]) for layer in LAYERS if layer in wanted}
    await http.close()
    return layers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per layer")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="fake API latency (s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--layers",
        default=",".join(LAYERS),
        help=f"comma-separated layers to time (default: {','.join(LAYERS)})",
    )
    args = parser.parse_args(argv)
    wanted = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if unknown := [layer for layer in wanted if layer not in LAYERS]:
        parser.error(f"unknown layers: {', '.join(unknown)} (known: {', '.join(LAYERS)})")
    accounts = args.requests // 2  # two windows each: poll_all_once sends args.requests
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        port = free_port()
        fake_args = [sys.executable, "-m", "exporter.fakeapi", "--port", str(port)]
        fake_args += ["--latency", str(args.latency), "--accounts", str(accounts)]
        with process(fake_args, Path(tmp) / "fakeapi.log") as fake:
            wait_for_port(port, fake)
            url = f"http://127.0.0.1:{port}/v1/partners-api/traffic-source"
            config = _config(Path(tmp) / "config.yaml", url, accounts, args.concurrency)
            for _ in range(args.repeat):
                run = eventloop.run(_layers(url, config, args.requests, args.concurrency, wanted))
                for layer, seconds in run.items():
                    samples.setdefault(layer, []).append(seconds / args.requests)
    print(f"CPU per request, {args.requests:,} requests, {args.concurrency} at a time, ", end="")
    print(f"{eventloop.loop_name()} (median of {args.repeat}; min - max)")
    for layer, values in samples.items():
        low, high = min(values) * 1e6, max(values) * 1e6
        print(f"  {layer:8} {statistics.median(values) * 1e6:6.0f} us  ({low:.0f} - {high:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
