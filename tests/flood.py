"""A flood of half-sent requests from one address (run as a script by tests/test_flood.py).

Opens N connections to 127.0.0.1:PORT, sends a request line and one header on each but never
the blank line that ends the head, and sends one more header line every TRICKLE seconds on
every connection still open. Stops by itself after DURATION seconds, closes what is left, and
prints as JSON how each connection ended, timed from its opening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"
CONNECTING_AT_ONCE = 200  # connection attempts in flight, so the listener's backlog is not swamped


async def hold(port: int, trickle: float, end: float, gate: asyncio.Semaphore) -> tuple[str, float]:
    """(outcome, seconds from opening to outcome); outcome: closed, answered, open, unconnected."""
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0)), 10
            )
        except (OSError, TimeoutError):
            return "unconnected", 0.0
    opened = time.monotonic()
    try:
        writer.write(PARTIAL)
        line = 0
        while (remaining := end - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(1024), min(trickle, remaining))
            except TimeoutError:
                writer.write(f"X-Trickle-{line}: still coming\r\n".encode())
                line += 1
                continue
            return ("answered" if data else "closed"), time.monotonic() - opened
        return "open", time.monotonic() - opened
    except ConnectionError:
        return "closed", time.monotonic() - opened
    finally:
        writer.close()


async def flood(port: int, connections: int, trickle: float, duration: float) -> dict[str, object]:
    end = time.monotonic() + duration
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    results = await asyncio.gather(*(hold(port, trickle, end, gate) for _ in range(connections)))
    summary: dict[str, object] = {"connections": connections}
    for outcome in ("closed", "answered", "open", "unconnected"):
        summary[outcome] = sorted(round(t, 3) for o, t in results if o == outcome)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--trickle", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.connections + 100:
        print(f"the hard open-files limit {hard} is too low for the flood", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    summary = asyncio.run(flood(args.port, args.connections, args.trickle, args.duration))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
