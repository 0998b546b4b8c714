"""One process of the benchmark's vendor: the fake API on aiohttp's server, keeping its records.

``python -m exporter.fakeapi`` keeps no record of what it answered (its long runs would only
grow). The benchmarks need one: which account was polled when is what shows whether the
exporter polled every account once per interval, in a steady stream. This serves the same
``FakeApi`` with ``record_requests=True`` and, when stopped (SIGTERM or SIGINT), writes one
line per request to ``--record``: its arrival time (``time.monotonic()``, the machine's clock,
which the harness reads too), its rest key and the status it got.

``python -m bench.vendor --accounts N --latency L --port P [--reuse-port] --record FILE``
(started by the harness, one process per worker: with ``--reuse-port`` several share a port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections.abc import Sequence
from pathlib import Path

from exporter import eventloop
from exporter.fakeapi import FakeAccount, FakeApi, RecordedRequest, generated_accounts, traffic_rows


def record_line(request: RecordedRequest) -> str:
    """``TIME KEY STATUS``: what the harness reads back (``bench.traffic.read_records``)."""
    return f"{request.time:.6f} {request.rest_key or '-'} {request.status}\n"


async def serve(
    accounts: list[FakeAccount], latency: float, port: int, reuse_port: bool, record: Path
) -> None:
    """Serve until SIGTERM or SIGINT, then write the records."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    fake = FakeApi(accounts, latency=latency)
    # As `python -m exporter.fakeapi` does: a real vendor does not work out an account's figures
    # afresh on its first request, so the first cycle must not measure the fake warming up.
    for account in accounts:
        traffic_rows(account, 0, 3600)
    gc.collect()
    gc.freeze()
    url = await fake.start("127.0.0.1", port, reuse_port=reuse_port)
    print(f"fake Retargeting API (recording): {len(accounts)} accounts at {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.close()
        with record.open("w") as out:
            out.writelines(record_line(request) for request in fake.requests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vendor", description=__doc__)
    parser.add_argument("--accounts", type=int, required=True, help="generated paid accounts")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to each answer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true", help="share the port (workers)")
    parser.add_argument("--record", type=Path, required=True, help="write the records here")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(
            serve(
                generated_accounts(args.accounts),
                args.latency,
                args.port,
                args.reuse_port,
                args.record,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
