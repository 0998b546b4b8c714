"""``python -m bench``: the named scenarios, their flags, and the tables they print.

``--scenario realistic`` is what users run (the default concurrency, a slow vendor, a short
interval); ``--scenario capacity`` is one process at its limit. Every other flag overrides the
scenario's value. ``--event-loop uvloop,asyncio`` runs the exporter on each loop in turn (run by
run, so that the machine's drift hits both alike): one column each, the A/B in one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import EVENT_LOOPS, Result, Settings, run
from bench.report import commit, load, table


@dataclass(frozen=True)
class Scenario:
    settings: Settings
    targets: Mapping[str, str]  # row name -> the target shown beside it (issue 14)


_CYCLE = "start-up cycle (in the exporter) ÷ bound"

SCENARIOS: Mapping[str, Scenario] = {
    "realistic": Scenario(
        Settings(
            accounts=2000,
            latency=0.15,
            fake_workers=1,  # 53 requests a second at most: one process answers them easily
            concurrency=8,
            interval="1m",
            scrapes=0,  # with a 1-minute interval accounts change between any two scrapes
            poll_scrape_every=15.0,
            steady_intervals=3,
        ),
        {
            _CYCLE: "≤ 1.05x",
            "requests/s at the vendor: mean / busiest second": "busiest ≤ 2x mean",
            "account-intervals polled 0 / 1 / 2+ times": "all once",
        },
    ),
    "capacity": Scenario(
        Settings(accounts=10000, latency=0.05, fake_workers=2, concurrency=200),
        {
            _CYCLE: "≤ 2x",
            "max event-loop lag in the start-up cycle": "≤ 100 ms",
            "max event-loop lag while scraping": "≤ 100 ms",
            "/metrics median / p99, gzip, nothing changed": "median ≤ 50 ms",
            "peak RSS": "≤ 250 MB",
        },
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the exporter daemon against the fake API (docs/benchmarks.md).",
    )
    add = parser.add_argument
    add("--scenario", choices=SCENARIOS, default="realistic", help="the settings to start from")
    add("--accounts", type=int, help="accounts (N)")
    add("--windows", type=int, help="windows per account (24h, 30d, 7d, 1h)")
    add("--latency", type=float, help="fake API latency in seconds (L)")
    add("--fake-workers", type=int, help="processes serving the fake API")
    add("--concurrency", type=int, help="the exporter's api.max_concurrency (C)")
    add("--interval", help="polling interval, e.g. 1m")
    add("--scrapes", type=int, help="timed /metrics scrapes per encoding after the cycle")
    add("--poll-scrape-every", type=float, help="gzip scrape period during the cycle (s)")
    add("--lag-window", type=float, help="--debug.loop-lag window (s)")
    add("--steady-intervals", type=int, help="whole polling intervals of steady phase")
    add("--steady-every", type=float, help="gzip scrape period in the steady phase (s)")
    add(
        "--event-loop",
        default="uvloop",
        help=f"the exporter's event loop, or several comma-separated ({','.join(EVENT_LOOPS)})",
    )
    add("--repeat", type=int, default=1, help="runs per event loop; the median cycle is shown")
    add("--workdir", type=Path, help="keep configs, logs and the fake's records here")
    add("--json", type=Path, help="also write the results as JSON to this file")
    add("--profile", type=Path, help="py-spy profiles up to the cycle's end, into this directory")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The scenario's settings with every flag given on the command line in its place."""
    base = SCENARIOS[args.scenario].settings
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(args, f.name, None) is not None and f.name not in ("event_loop", "profile")
    }
    return dataclasses.replace(base, **given)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    loops = [loop.strip() for loop in args.event_loop.split(",") if loop.strip()]
    if not loops or any(loop not in EVENT_LOOPS for loop in loops):
        parser.error(f"--event-loop: {args.event_loop!r} (known: {', '.join(EVENT_LOOPS)})")
    base = settings_from(args)
    scenario = SCENARIOS[args.scenario]
    before = load()
    runs: dict[str, list[Result]] = {loop: [] for loop in loops}
    for number in range(args.repeat):
        for loop in loops:
            tag = f"{loop}-{number + 1}"
            settings = dataclasses.replace(
                base,
                event_loop=loop,
                workdir=args.workdir / tag if args.workdir else None,
                profile=args.profile / f"exporter-{tag}.txt" if args.profile else None,
            )
            print(
                f"{args.scenario}: {settings.accounts:,} accounts on {loop} "
                f"({number + 1}/{args.repeat}) ...",
                file=sys.stderr,
                flush=True,
            )
            result = run(settings)
            runs[loop].append(result)
            if settings.workdir is not None:  # every run's figures, not only the median's
                (settings.workdir / "result.json").write_text(json.dumps(result.to_json()))
    results = [_median_run(runs[loop]) for loop in loops]
    for result in results:
        for problem in result.problems:
            print(f"  problem ({result.settings.event_loop}): {problem}", file=sys.stderr)
    title = (
        f"{args.scenario}: {base.accounts:,} x {base.windows}, C {base.concurrency}, "
        f"{base.latency * 1000:g} ms, interval {base.interval}"
    )
    print(table(results, scenario.targets, title))
    print(f"\nAt commit `{commit()}`; load average {before} before, {load()} after.")
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


def _median_run(runs: list[Result]) -> Result:
    """The run with the median cycle, carrying every run's cycle and problems."""
    ordered = sorted(runs, key=lambda r: (math.isnan(r.cycle), r.cycle))
    result = ordered[(len(ordered) - 1) // 2]
    result.cycles = [r.cycle for r in runs if not math.isnan(r.cycle)]
    result.problems = [p for r in runs for p in r.problems]
    return result
