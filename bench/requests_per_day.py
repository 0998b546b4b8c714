"""``python -m bench.requests_per_day``: what a configuration costs, counted by the vendor.

Runs the real exporter against ``python -m exporter.fakeapi --record`` (the demo accounts) with
a configuration whose durations are scaled down (``bench/requests/*-x10.yaml``: every interval
and refresh a tenth), then counts, in the fake's own record, the requests each key received
in a steady span (after a warm-up, a whole number of refreshes long) and scales them to a day:
``count * 86400 / (span * scale)``. The exporter's own counters are not used.

``--source DIR`` runs the exporter of another source tree (``git archive COMMIT | tar -x -C DIR``
for the "before" figures); the configurations are read from this one.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.harness import free_port, wait_for_port
from bench.traffic import read_records
from exporter.fakeapi import ENDPOINT_PATH

REPO = Path(__file__).resolve().parent.parent
KEYS = {"SHOP_FASHION_KEY": "demo-key-fashion", "SHOP_ELECTRONICS_KEY": "demo-key-electronics"}
NAMES = {key: env.removesuffix("_KEY").lower().replace("_", "-") for env, key in KEYS.items()}


def measure(
    config: Path, source: Path, warmup: float, span: float, scale: float
) -> dict[str, float]:
    """Requests per day for each account of ``config``, from the fake's record."""
    with tempfile.TemporaryDirectory(prefix="requests-per-day-") as tmp:
        work = Path(tmp)
        record = work / "record.txt"
        port, listen = free_port(), free_port()
        fake = subprocess.Popen(
            [sys.executable, "-m", "exporter.fakeapi", f"--port={port}", f"--record={record}"],
            cwd=REPO,
        )
        exporter = None
        try:
            wait_for_port(port, fake)
            url = f"http://127.0.0.1:{port}{ENDPOINT_PATH}"
            text = config.read_text().replace("${API_URL}", url)
            (work / "config.yaml").write_text(text)
            exporter = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    f"--config.file={work / 'config.yaml'}",
                    f"--web.listen-address=127.0.0.1:{listen}",
                    "--log.level=warn",
                ],
                cwd=source,
                env=dict(os.environ, **KEYS),
            )
            time.sleep(warmup + span + 1.0)
        finally:
            for child in (exporter, fake):
                if child is not None:
                    child.send_signal(signal.SIGTERM)
                    child.wait(timeout=60)
        records = read_records([record])
    start = records[0].time + warmup
    counts = Counter(r.key for r in records if start <= r.time < start + span)
    return {NAMES[key]: count * 86400 / (span * scale) for key, count in counts.items()}


def main(argv: list[str] | None = None) -> int:
    """Measure each configuration given and print one Markdown row per account."""
    parser = argparse.ArgumentParser(prog="python -m bench.requests_per_day")
    parser.add_argument("configs", nargs="+", type=Path, help="scaled configurations")
    parser.add_argument("--source", type=Path, default=REPO, help="source tree to run")
    parser.add_argument("--scale", type=float, default=10.0, help="real time ÷ run time")
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds not counted")
    parser.add_argument("--span", type=float, default=720.0, help="seconds counted")
    args = parser.parse_args(argv)
    for config in args.configs:
        figures = measure(config, args.source, args.warmup, args.span, args.scale)
        total = sum(figures.values())
        row = " · ".join(f"{name} {n:.0f}" for name, n in sorted(figures.items()))
        print(f"| {config.name} | {row} | {total:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
