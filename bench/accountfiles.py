"""What watching account files costs: a first load, a check when nothing changed, and a check
plus reload after one file changed, for folders of account files with one key file per account.

    python -m bench.accountfiles [--shape FILESxACCOUNTS ...]

The daemon checks every --config.auto-reload-interval, reading the files in its config thread
(exporter.watch.ConfigThread) and applying a new configuration on the event loop. So for each
check and reload the bench gives the time it took and the event loop's longest lag meanwhile
(a 5 ms timer's lateness, as --debug.loop-lag measures it), and the time the reload's apply
held the loop (Poller.apply): times are medians (of 20 checks, of 5 reloads), a lag is given
as median / worst. The first load happens at start-up, before the loop runs.

Files are written, then left alone for a little over 2 s, as real ones are: a file changed in
the last 2 s is always hashed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from exporter.accountfiles import ConfigSource
from exporter.config import Config
from exporter.looplag import LoopLagMonitor
from exporter.poller import Poller
from exporter.selfmetrics import SelfMetrics
from exporter.watch import ConfigThread

T = TypeVar("T")
Figures = dict[str, float]

_SETTLE_SECONDS = 2.5  # past the window in which a file's digest is never reused


def _folder(root: Path, files: int, per_file: int) -> Path:
    (root / "accounts.d" / "keys").mkdir(parents=True)
    config = {"windows": ["24h"], "account_files": ["accounts.d/*.yaml"]}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    for f in range(files):
        accounts = []
        for a in range(per_file):
            name = f"shop-{f}-{a}"
            (root / "accounts.d" / "keys" / f"{name}.key").write_text("k" * 32)
            accounts.append({"name": name, "rest_key_file": f"keys/{name}.key", "currency": "EUR"})
        (root / "accounts.d" / f"shops-{f:05d}.yaml").write_text(yaml.safe_dump(accounts))
    return root / "config.yaml"


def _change(account_file: Path, to: str) -> None:
    text = account_file.read_text()
    account_file.write_text(text.replace("RON" if to == "EUR" else "EUR", to))


async def _in_thread(thread: ConfigThread, work: Callable[[], T]) -> tuple[T, float, float]:
    """``work()`` in the config thread: its result, the seconds it took and the event loop's
    longest lag meanwhile."""
    lag = LoopLagMonitor(3600.0, period=0.005)
    ticking = asyncio.create_task(lag.run())
    await asyncio.sleep(0)  # the monitor's first wait has begun
    started = time.perf_counter()
    result = await thread.run(work)
    took = time.perf_counter() - started
    ticking.cancel()
    return result, took, lag.max_lag()


def _ms(values: list[float], how: Callable[[list[float]], float]) -> float:
    return how(values) * 1000


async def _watch(
    source: ConfigSource, config: Config, changed: Path, checks: int, reloads: int
) -> Figures:
    thread = ConfigThread()
    poller = Poller.for_config(config, SelfMetrics())
    idle = [await _in_thread(thread, source.changed) for _ in range(checks)]
    assert not any(found for found, _, _ in idle)

    def check_and_reload() -> Config:
        assert source.changed()
        return source.load()

    again, applies = [], []
    for i in range(reloads):
        await asyncio.to_thread(_change, changed, "RON" if i % 2 == 0 else "EUR")
        new, took, lag = await _in_thread(thread, check_and_reload)
        again.append((took, lag))
        started = time.perf_counter()
        poller.apply(new)  # on the loop, as the daemon applies it
        applies.append(time.perf_counter() - started)
    thread.close()
    await poller.close()
    median = statistics.median
    return {
        "idle_check_ms": _ms([took for _, took, _ in idle], median),
        "idle_check_lag_ms": _ms([lag for _, _, lag in idle], median),
        "idle_check_worst_lag_ms": _ms([lag for _, _, lag in idle], max),
        "reload_ms": _ms([took for took, _ in again], median),
        "reload_lag_ms": _ms([lag for _, lag in again], median),
        "reload_worst_lag_ms": _ms([lag for _, lag in again], max),
        "apply_ms": _ms(applies, median),
    }


def measure(files: int, per_file: int, checks: int = 20, reloads: int = 5) -> Figures:
    """Milliseconds: the first load (before the loop runs, as at start-up); then, in the config
    thread, checks with nothing changed and checks + reloads of one changed file (medians),
    each with the loop's lag meanwhile (median and worst); and the reloads' apply on the loop."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _folder(Path(tmp), files, per_file)
        time.sleep(_SETTLE_SECONDS)
        source = ConfigSource(path)
        started = time.perf_counter()
        config = source.load()
        first = time.perf_counter() - started
        assert len(config.accounts) == files * per_file
        changed = Path(tmp) / "accounts.d" / "shops-00000.yaml"
        figures = asyncio.run(_watch(source, config, changed, checks, reloads))
    return {"first_load_ms": first * 1000, **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accountfiles", description=__doc__)
    parser.add_argument(
        "--shape",
        action="append",
        metavar="FILESxACCOUNTS",
        help="account files x accounts per file (default: 100x10, 1000x1, 1000x10)",
    )
    args = parser.parse_args(argv)
    shapes = args.shape or ["100x10", "1000x1", "1000x10"]
    print(
        "| files x accounts | first load | check, nothing changed | its loop lag "
        "| check + reload, one changed | its loop lag | apply on the loop |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape in shapes:
        files, per_file = (int(n) for n in shape.split("x"))
        got = measure(files, per_file)
        print(
            f"| {files} x {per_file} | {got['first_load_ms']:.0f} ms "
            f"| {got['idle_check_ms']:.1f} ms "
            f"| {got['idle_check_lag_ms']:.1f} / {got['idle_check_worst_lag_ms']:.0f} ms "
            f"| {got['reload_ms']:.0f} ms "
            f"| {got['reload_lag_ms']:.1f} / {got['reload_worst_lag_ms']:.0f} ms "
            f"| {got['apply_ms']:.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
