"""``retargeting-exporter backfill``: flags, confirmation, the run from plan to file, exit codes."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from tqdm import tqdm

from exporter import __version__, eventloop, flags, logs
from exporter.backfill.execute import NoProgress, Outcome, Progress, execute
from exporter.backfill.output import render_openmetrics, write_atomically
from exporter.backfill.plan import make_plan, step_times
from exporter.backfill.report import describe_cost, failure_report
from exporter.backfill.state import StateFile, read_state
from exporter.client import TrafficSourceClient
from exporter.config import Config, load_config
from exporter.flags import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_common_flags,
    exit_usage,
    parse_shard_flags,
)
from exporter.yamlcheck import ConfigError, parse_duration

log = logging.getLogger("exporter.backfill")  # one logger name for the whole command

PROG = "retargeting-exporter backfill"
EXIT_INTERRUPTED = 130
# Above this many API requests, ask first (or require --yes when there is no terminal).
CONFIRM_ABOVE = 1000
MIN_STEP_SECONDS = 60
# Labels of the traffic series themselves; --label may add others (job, instance, ...).
_OWN_LABELS = frozenset({"account", "source_name", "window"})
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_time(text: str, flag: str) -> int:
    """``2024-05-01`` (midnight UTC) or RFC 3339 (``2024-05-01T12:00:00Z``, ``…+03:00``)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return int(
                datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).timestamp()
            )
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: expected a date (2024-05-01) or RFC 3339 time (2024-05-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"{flag} {text!r}: give the UTC offset (Z or +03:00)")
    return int(when.timestamp())


@dataclass(frozen=True)
class Options:
    """What ``backfill``'s command line asked for, validated."""

    config_file: str
    start: int
    end: int
    step: int
    output: Path
    state_file: Path
    resume: bool
    yes: bool
    labels: Mapping[str, str]
    accounts: tuple[str, ...]
    shard_count: int
    shard_index: int
    log_level: str
    log_format: str


def build_parser() -> argparse.ArgumentParser:
    """``backfill``'s flags (``retargeting-exporter backfill --help``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Recreate the traffic series of past times from the Retargeting API, as an "
        "OpenMetrics file for `promtool tsdb create-blocks-from openmetrics FILE DATA_DIR`.",
    )
    add_common_flags(parser)
    add = parser.add_argument
    add("--days", type=float, metavar="N", help="backfill the N days before --to (or before now)")
    add(
        "--from",
        dest="start",
        metavar="TIME",
        help="start: a date (2024-05-01, midnight UTC) or RFC 3339 time (2024-05-01T12:00:00Z)",
    )
    add("--to", dest="end", metavar="TIME", help="end, like --from (default: now)")
    add(
        "--step",
        default="1h",
        metavar="DURATION",
        help="time between samples, at least 1m (default: %(default)s)",
    )
    add(
        "--output",
        required=True,
        metavar="FILE",
        help="OpenMetrics file to write (replaced atomically)",
    )
    add(
        "--state.file",
        dest="state_file",
        metavar="FILE",
        help="JSON-lines record of every answer, for --resume (default: FILE.state.jsonl)",
    )
    add(
        "--resume",
        action="store_true",
        help="keep the state file and request only the windows it lacks or that failed",
    )
    add(
        "--yes",
        action="store_true",
        help=f"do not ask before sending more than {CONFIRM_ABOVE} API requests",
    )
    add(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a label to every series, e.g. job=retargeting, to match the live series "
        "(repeatable)",
    )
    add(
        "--account",
        action="append",
        default=[],
        metavar="NAME",
        help="backfill only this account (repeatable; default: all)",
    )
    return parser  # fmt: skip


def parse_options(argv: Sequence[str], now: float) -> Options:
    """Parse and check the flags (``now`` bounds ``--to``); ``UsageError`` names the problem."""
    args = build_parser().parse_args(argv)
    try:
        step = parse_duration(args.step)
    except ValueError as exc:
        raise UsageError(f"--step: {exc}") from None
    if step != int(step) or step < MIN_STEP_SECONDS:
        raise UsageError("--step: must be a whole number of seconds, at least 1m")
    end = int(now) if args.end is None else parse_time(args.end, "--to")
    if end > now:
        raise UsageError("--to: must not be in the future")
    if args.days is not None and args.start is not None:
        raise UsageError("give --days or --from, not both")
    if args.days is not None:
        if not 0 < args.days <= 3660:
            raise UsageError("--days: must be more than 0 and at most 3660")
        start = end - int(args.days * 86400)
    elif args.start is not None:
        start = parse_time(args.start, "--from")
    else:
        raise UsageError("say how far back: --days N, or --from TIME [--to TIME]")
    if start >= end:
        raise UsageError("--from must be before --to")
    labels: dict[str, str] = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not _LABEL_NAME.match(name) or name.startswith("__"):
            raise UsageError(f"--label {item!r}: expected NAME=VALUE with a Prometheus label name")
        if name in _OWN_LABELS:
            raise UsageError(f"--label {item!r}: {name} is set by the backfill itself")
        labels[name] = value
    count, index = parse_shard_flags(args)
    output = Path(args.output)
    return Options(
        config_file=args.config_file,
        start=start,
        end=end,
        step=int(step),
        output=output,
        state_file=Path(args.state_file) if args.state_file else Path(f"{output}.state.jsonl"),
        resume=args.resume,
        yes=args.yes,
        labels=labels,
        accounts=tuple(args.account),
        shard_count=count,
        shard_index=index,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def select_accounts(config: Config, options: Options) -> Config:
    """The accounts of this shard, narrowed to ``--account`` if given."""
    return flags.select_accounts(config, options.accounts, options.shard_count, options.shard_index)


def confirm(requests: int, *, yes: bool, threshold: int | None = None) -> None:
    """Ask before a costly run; refuse without a terminal unless ``--yes``. Raises UsageError."""
    threshold = CONFIRM_ABOVE if threshold is None else threshold
    if yes or requests <= threshold:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to send {requests} API requests (more than {threshold}) without "
            "confirmation: standard input is not a terminal; pass --yes to go ahead"
        )
    print(f"Send {requests} requests to the Retargeting API? [y/N] ", end="", file=sys.stderr)
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("aborted: nothing was requested")


def _progress(total: int) -> Progress:
    """A progress bar on a terminal (requests done, rate, ETA, errors); nothing otherwise."""
    if not sys.stderr.isatty():
        return NoProgress()
    return tqdm(total=total, unit="req", desc="backfill", file=sys.stderr, dynamic_ncols=True)


async def run(options: Options, config: Config) -> int:
    """Plan, confirm, request, write. Returns the exit code."""
    state = read_state(options.state_file) if options.resume else {}
    if options.resume and not options.state_file.exists():
        log.warning(
            "no state file to resume from, starting afresh",
            extra={"state_file": str(options.state_file)},
        )
    plan = make_plan(config, step_times(options.start, options.end, options.step), state)
    print(describe_cost(plan, config, options.step), file=sys.stderr)
    confirm(len(plan.requests), yes=options.yes)
    outcome = Outcome(results=dict(plan.known))
    state_file = StateFile(options.state_file, resume=options.resume)
    try:
        if plan.requests:
            async with TrafficSourceClient.for_api(config.api) as client:
                bar = _progress(len(plan.requests))
                try:
                    outcome = await execute(plan, config, client, state=state_file, progress=bar)
                finally:
                    bar.close()
    finally:
        state_file.close()
    wanted = [outcome.results[p] for p in plan.points if p in outcome.results]
    text = render_openmetrics((r for r in wanted if r.ok), options.labels)
    write_atomically(options.output, text)
    written = sum(1 for r in wanted if r.ok)
    print(
        f"wrote {options.output}: {written} of {len(plan.points)} windows "
        f"({outcome.requests_sent} API requests sent); state in {options.state_file}",
        file=sys.stderr,
    )
    report = failure_report(plan, outcome)
    if report:
        print("failures:", file=sys.stderr)
        for line in report:
            print(line, file=sys.stderr)
        print(
            f"rerun with --resume to request only the missing windows "
            f"(same flags, state file {options.state_file})",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    """``retargeting-exporter backfill [flags]``; returns the exit code."""
    try:
        options = parse_options(argv, time.time())
    except UsageError as exc:
        return exit_usage(PROG, f"error: {exc}")
    redactor = logs.Redactor()
    logs.configure(options.log_level, options.log_format, redactor)
    try:
        config = load_config(options.config_file)
        redactor.update(config.secrets())
        config = select_accounts(config, options)
    except ConfigError as exc:
        return exit_usage(PROG, exc)
    except UsageError as exc:
        return exit_usage(PROG, f"error: {exc}")
    log.debug("backfill", extra={"version": __version__, "accounts": len(config.accounts)})
    try:
        return eventloop.run(run(options, config))
    except UsageError as exc:
        return exit_usage(PROG, f"error: {exc}")
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; the answers so far are in {options.state_file}: "
            "rerun with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
