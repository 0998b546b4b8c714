"""``python -m exporter.fakeapi``: serve the fake vendor API until interrupted.

The demo accounts by default, or ``--accounts N`` generated ones for benchmarks, from one
process or ``--workers N`` processes sharing the port; ``--fault NAME`` makes every answer
misbehave (a vendor error, a rate limit, a hang, a malformed body) to try an exporter on.
``--record FILE`` writes, when stopped, one line per request answered (:func:`record_line`):
the benchmarks read them back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import subprocess
import sys
from pathlib import Path

from exporter import eventloop
from exporter.fakeapi.accounts import FakeAccount, demo_accounts, generated_accounts
from exporter.fakeapi.faults import Fault
from exporter.fakeapi.figures import traffic_rows
from exporter.fakeapi.server import FakeApi, RecordedRequest


def record_line(request: RecordedRequest) -> str:
    """``TIME KEY STATUS``: arrival on ``time.monotonic()``, the rest key, the status sent."""
    return f"{request.time:.6f} {request.rest_key or '-'} {request.status}\n"


async def _serve(
    accounts: list[FakeAccount],
    host: str,
    port: int,
    latency: float,
    reuse_port: bool,
    record: Path | None,
    fault: Fault | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    # Without --record nobody reads the records, and a long run would only grow them.
    fake = FakeApi(accounts, latency=latency, record_requests=record is not None)
    fake.set_fault(fault)
    # A real vendor does not work out an account's figures afresh on its first request: fill
    # the per-account caches now, and freeze them, so that a benchmark's first cycle does not
    # measure the fake warming up.
    for account in accounts:
        traffic_rows(account, 0, 3600)
    gc.collect()
    gc.freeze()
    url = await fake.start(host, port, reuse_port=reuse_port)
    try:
        print(f"fake Retargeting API: {len(accounts)} accounts at {url}", flush=True)
        await stop.wait()
    finally:
        await fake.close()
        if record is not None:
            with record.open("w") as out:
                out.writelines(record_line(request) for request in fake.requests)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.fakeapi",
        description="A local stand-in for the Retargeting Traffic Source partners API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds from each request to its answer"
    )
    parser.add_argument(
        "--accounts",
        type=int,
        metavar="N",
        help="serve N generated paid accounts (keys key-00000, ...) instead of the demo ones",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (SO_REUSEPORT; Linux), so that the fake is "
        "not what limits a benchmark; needs --port other than 0",
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="when stopped, write one line per request answered: time key status",
    )
    parser.add_argument(
        "--fault",
        type=Fault,
        choices=list(Fault),
        metavar="NAME",
        help="misbehave on every request, with the fault's default parameters: " + ", ".join(Fault),
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve the demo accounts (or ``--accounts N`` generated ones) until interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and args.port == 0:
        parser.error("--workers needs a fixed --port")
    if args.record is not None and args.workers > 1:
        parser.error("--record needs a single worker: start one process per record file")
    if args.accounts is not None and args.accounts < 1:
        parser.error("--accounts must be at least 1")
    accounts = demo_accounts() if args.accounts is None else generated_accounts(args.accounts)
    # The other workers: the same command, one process each, stopped with this one.
    workers = [
        subprocess.Popen([sys.executable, "-m", "exporter.fakeapi", *_worker_args(argv)])  # noqa: S603
        for _ in range(args.workers - 1)
    ]
    try:
        reuse = args.workers > 1 or args.reuse_port
        eventloop.run(
            _serve(accounts, args.host, args.port, args.latency, reuse, args.record, args.fault)
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"fakeapi: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
    return 0


def _worker_args(argv: list[str] | None) -> list[str]:
    """The command line of one more worker: this one's, as a single worker sharing the port."""
    given = list(sys.argv[1:] if argv is None else argv)
    return [*given, "--workers", "1", "--reuse-port"]
