"""Backfill: recreate the exporter's traffic series for past times, as OpenMetrics for promtool.

For every configured account and window, and every step of a time range, the window ending at
that step is requested from the API and written with the step as its timestamp, under the same
metric names and labels as the live exporter. ``promtool tsdb create-blocks-from openmetrics``
turns the file into TSDB blocks for Prometheus, so dashboards and alert baselines have history
from day one.

Requests go through the live path (:func:`exporter.poller.fetch_with_retries`): the same client,
concurrency limit, retries, back-off and error classification. Every answer is appended to a
state file (JSON lines) as it arrives; ``--resume`` reads it back and requests only what is
missing or failed. The output is rendered from the state at the end and replaced atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from tqdm import tqdm

from exporter import __version__, eventloop, logs
from exporter.cli import UsageError, add_common_flags, parse_shard_flags
from exporter.client import ApiError, ApiErrorReason, TrafficRow, TrafficSourceClient
from exporter.config import (
    AccountConfig,
    Config,
    ConfigError,
    format_duration,
    load_config,
    parse_duration,
)
from exporter.metrics import TRAFFIC_FIELDS, escape, number
from exporter.poller import cap_sources, fetch_with_retries
from exporter.sharding import shard_of

log = logging.getLogger(__name__)

PROG = "retargeting-exporter backfill"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Above this many API requests, ask first (or require --yes when there is no terminal).
CONFIRM_ABOVE = 1000
MIN_STEP_SECONDS = 60
# After these the account's remaining requests would fail the same way: they are not sent.
_ACCOUNT_STOPPERS = frozenset({ApiErrorReason.INVALID_KEY, ApiErrorReason.ACCOUNT_INACTIVE})
# Labels of the traffic series themselves; --label may add others (job, instance, ...).
_OWN_LABELS = frozenset({"account", "source_name", "window"})
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_FAILURES_SHOWN_PER_ACCOUNT = 10


# ---------------------------------------------------------------------------------------------
# What to request


@dataclass(frozen=True, order=True)
class Point:
    """One sample time of one account's window: becomes one timestamp of its series."""

    account: str
    window: str
    step: int  # Unix seconds: the sample's timestamp and the poll time the window ends at


@dataclass(frozen=True)
class Request:
    """One API request; every point asking for exactly these bounds shares its answer."""

    account: AccountConfig
    date_from: int
    date_to: int
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Result:
    """What one point got: rows, or the reason it failed. One line of the state file."""

    point: Point
    date_from: int
    date_to: int
    rows: tuple[TrafficRow, ...] | None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.rows is not None


@dataclass(frozen=True)
class Plan:
    """The points of a backfill, which are already known, and the requests still needed."""

    steps: tuple[int, ...]
    points: tuple[Point, ...]
    requests: tuple[Request, ...]
    known: Mapping[Point, Result]  # points answered by the state file (directly or via bounds)
    empty: int  # points whose window has no length (today at local midnight): no sample

    @property
    def nominal_requests(self) -> int:
        """accounts x windows x steps, before resume and merging identical windows."""
        return len(self.points) + self.empty


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


def step_times(start: int, end: int, step: int) -> tuple[int, ...]:
    """Multiples of ``step`` (since the epoch) from ``start`` to ``end``, both included.

    Aligned steps make reruns over other ranges meet the same points, and line up with the
    hourly steps of subqueries such as ``avg_over_time(x[7d:1h])``.
    """
    first = -(-start // step) * step
    return tuple(range(first, end + 1, step))


def make_plan(
    config: Config, steps: Sequence[int], state: Mapping[Point, Result] | None = None
) -> Plan:
    """Every (account, window, step); points already in ``state`` are not requested again."""
    state = state or {}
    answered: dict[tuple[str, int, int], Result] = {}
    for result in state.values():
        if result.ok:
            answered[(result.point.account, result.date_from, result.date_to)] = result
    points: list[Point] = []
    known: dict[Point, Result] = {}
    groups: dict[tuple[str, int, int], list[Point]] = {}
    accounts: dict[str, AccountConfig] = {}
    empty = 0
    for step in steps:
        for account in config.accounts:
            accounts[account.name] = account
            for window in account.windows:
                date_from, date_to = window.bounds(step, config.polling.end_offset)
                if date_to <= date_from:
                    empty += 1
                    continue
                point = Point(account.name, window.name, step)
                points.append(point)
                bounds = (account.name, date_from, date_to)
                previous = answered.get(bounds)
                if previous is not None:
                    known[point] = dataclasses.replace(previous, point=point)
                else:
                    groups.setdefault(bounds, []).append(point)
    requests = tuple(
        Request(accounts[name], date_from, date_to, tuple(group))
        for (name, date_from, date_to), group in groups.items()
    )
    return Plan(tuple(steps), tuple(points), requests, known, empty)


# ---------------------------------------------------------------------------------------------
# The state file


def _result_to_json(result: Result) -> str:
    data: dict[str, Any] = {
        "account": result.point.account,
        "window": result.point.window,
        "step": result.point.step,
        "date_from": result.date_from,
        "date_to": result.date_to,
    }
    if result.rows is not None:
        data["rows"] = [row._asdict() for row in result.rows]
    else:
        data["error"] = result.reason
        data["message"] = result.message
    return json.dumps(data, separators=(",", ":"))


def _result_from_json(line: str) -> Result:
    data = json.loads(line)
    point = Point(str(data["account"]), str(data["window"]), int(data["step"]))
    rows = None
    if "rows" in data:
        rows = tuple(TrafficRow(**row) for row in data["rows"])
    return Result(
        point,
        int(data["date_from"]),
        int(data["date_to"]),
        rows,
        str(data.get("error", "")),
        str(data.get("message", "")),
    )


def read_state(path: Path) -> dict[Point, Result]:
    """The latest result of every point in the state file (a success outlives later failures)."""
    results: dict[Point, Result] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return results
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            result = _result_from_json(line)
        except (ValueError, KeyError, TypeError):
            bad += 1  # e.g. the last line of a run that was killed mid-write
            continue
        previous = results.get(result.point)
        if result.ok or previous is None or not previous.ok:
            results[result.point] = result
    if bad:
        log.warning("ignored unreadable lines in the state file", extra={"lines": bad})
    return results


class StateFile:
    """Appends each result as one JSON line, flushed at once: an interrupted run loses nothing."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self._path = path
        mode = "a" if resume else "w"
        self._file: IO[str] = path.open(mode, encoding="utf-8")
        if resume and self._file.tell() > 0:
            with path.open("rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":  # a torn last line: start on a fresh one
                    self._file.write("\n")

    def append(self, result: Result) -> None:
        self._file.write(_result_to_json(result) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------------
# The output


def render_openmetrics(results: Iterable[Result], extra_labels: Mapping[str, str]) -> str:
    """OpenMetrics text with timestamps (seconds), ending in ``# EOF``.

    Each family's samples are contiguous, each series' samples together and in time order: the
    layout OpenMetrics requires and ``promtool tsdb create-blocks-from openmetrics`` needs.
    """
    series: dict[tuple[str, str, str], list[tuple[int, TrafficRow]]] = {}
    for result in results:
        for row in result.rows or ():
            key = (result.point.account, row.source_name, result.point.window)
            series.setdefault(key, []).append((result.point.step, row))
    extra = "".join(f',{k}="{escape(v)}"' for k, v in sorted(extra_labels.items()))
    out: list[str] = []
    for family, value in TRAFFIC_FIELDS:
        if not series:
            break
        out.append(f"# HELP {family.name} {family.help}.\n# TYPE {family.name} gauge\n")
        for (account, source, window), samples in sorted(series.items()):
            labels = (
                f'{{account="{escape(account)}",source_name="{escape(source)}",'
                f'window="{escape(window)}"{extra}}}'
            )
            out.extend(
                f"{family.name}{labels} {number(value(row))} {step}\n"
                for step, row in sorted(samples, key=lambda s: s[0])
            )
    out.append("# EOF\n")
    return "".join(out)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (or promtool) sees the old file or the whole new one, never a half-written one.
    """
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# ---------------------------------------------------------------------------------------------
# Running the requests


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> object: ...

    def close(self) -> object: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    """What a run did: every point's result, and the requests not sent."""

    results: dict[Point, Result]
    requests_sent: int = 0  # API requests, retries included
    failed_requests: int = 0
    not_sent: dict[str, int] = dataclasses.field(default_factory=dict)  # account → requests
    stopped: dict[str, ApiError] = dataclasses.field(default_factory=dict)  # account → why


async def execute(
    plan: Plan,
    config: Config,
    client: TrafficSourceClient,
    *,
    state: StateFile | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> Outcome:
    """Send the plan's requests, at most ``api.max_concurrency`` at a time, like the poller.

    After an invalid key or an inactive account, that account's remaining requests are not sent
    (they would fail the same way); a later run with ``--resume`` tries them again.
    """
    rng = rng or random.Random()  # back-off jitter, not cryptography
    bar: Progress = progress or _NoProgress()
    limit = asyncio.Semaphore(config.api.max_concurrency)
    outcome = Outcome(results=dict(plan.known))
    not_before: dict[str, float] = {}
    pending: Iterator[Request] = iter(plan.requests)

    def record(result: Result) -> None:
        outcome.results[result.point] = result
        if state is not None:
            state.append(result)

    async def worker() -> None:
        for request in pending:  # one shared iterator: each request is taken by one worker
            name = request.account.name
            if name in outcome.stopped:
                outcome.not_sent[name] = outcome.not_sent.get(name, 0) + 1
                bar.update()
                continue
            wait = not_before.get(name, 0.0) - clock()
            if wait > 0:  # the API asked this account to slow down (Retry-After)
                await asyncio.sleep(wait)
            fetched = await fetch_with_retries(
                client,
                request.account.rest_key,
                request.date_from,
                request.date_to,
                retries=config.api.retries,
                limit=limit,
                give_up_at=math.inf,  # no poll interval to stay within; attempts bound it
                clock=clock,
                rng=rng,
            )
            outcome.requests_sent += fetched.attempts
            if fetched.not_before:
                not_before[name] = max(not_before.get(name, 0.0), fetched.not_before)
            if fetched.rows is not None:
                rows, _ = cap_sources(fetched.rows, config.max_sources_per_account)
                for point in request.points:
                    record(Result(point, request.date_from, request.date_to, rows))
            elif (error := fetched.error) is not None:
                outcome.failed_requests += 1
                if error.reason in _ACCOUNT_STOPPERS and name not in outcome.stopped:
                    outcome.stopped[name] = error
                for point in request.points:
                    record(
                        Result(
                            point,
                            request.date_from,
                            request.date_to,
                            None,
                            str(error.reason),
                            error.message,
                        )
                    )
                bar.set_postfix_str(f"errors={outcome.failed_requests}", refresh=False)
            bar.update()

    workers = max(1, min(config.api.max_concurrency, len(plan.requests)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcome


# ---------------------------------------------------------------------------------------------
# Reporting


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_cost(plan: Plan, config: Config, step: int) -> str:
    """The run's size and API cost, for the user to confirm."""
    lines = []
    if plan.steps:
        lines.append(
            f"backfill {_utc(plan.steps[0])} .. {_utc(plan.steps[-1])} every "
            f"{format_duration(step)}: {len(plan.steps)} steps"
        )
    windows = sum(len(a.windows) for a in config.accounts)
    lines.append(
        f"  {len(config.accounts)} account(s) with {windows} window(s) in all x "
        f"{len(plan.steps)} steps = {plan.nominal_requests} windows to fill"
    )
    details = []
    if plan.known:
        details.append(f"{len(plan.known)} already in the state file")
    if plan.empty:
        details.append(f"{plan.empty} empty (today at local midnight)")
    shared = len(plan.points) - len(plan.known) - len(plan.requests)
    if shared:
        details.append(f"{shared} answered by the request for an identical window")
    if details:
        lines.append("  " + "; ".join(details))
    lines.append(
        f"  API requests to send: {len(plan.requests)} (more if some are retried), "
        f"at most {config.api.max_concurrency} at a time"
    )
    return "\n".join(lines)


def failure_report(plan: Plan, outcome: Outcome) -> list[str]:
    """Failed and unsent points, per account and step (empty when all succeeded)."""
    by_account: dict[str, list[Result]] = {}
    missing: dict[str, int] = {}
    for point in plan.points:
        result = outcome.results.get(point)
        if result is None:
            missing[point.account] = missing.get(point.account, 0) + 1
        elif not result.ok:
            by_account.setdefault(point.account, []).append(result)
    lines: list[str] = []
    for account in sorted(set(by_account) | set(missing)):
        failed = sorted(by_account.get(account, []), key=lambda r: (r.point.step, r.point.window))
        summary = f"account {account}: {len(failed)} window(s) failed"
        if missing.get(account):
            summary += f", {missing[account]} not requested"
        stopped = outcome.stopped.get(account)
        if stopped is not None:
            summary += f" (stopped after {stopped.reason}: {stopped.message})"
        lines.append(summary)
        for result in failed[:_FAILURES_SHOWN_PER_ACCOUNT]:
            lines.append(
                f"  step {_utc(result.point.step)} window {result.point.window}: "
                f"{result.reason}: {result.message}"
            )
        if len(failed) > _FAILURES_SHOWN_PER_ACCOUNT:
            lines.append(f"  … and {len(failed) - _FAILURES_SHOWN_PER_ACCOUNT} more")
    return lines


# ---------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class Options:
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
    accounts = config.accounts
    if options.accounts:
        known = {a.name for a in accounts}
        unknown = [name for name in options.accounts if name not in known]
        if unknown:
            raise UsageError(f"--account: not in {config.source}: {', '.join(unknown)}")
        accounts = tuple(a for a in accounts if a.name in options.accounts)
    if options.shard_count > 1:
        accounts = tuple(
            a for a in accounts if shard_of(a.name, options.shard_count) == options.shard_index
        )
    return dataclasses.replace(config, accounts=accounts)


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
        return _NoProgress()
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
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    redactor = logs.Redactor()
    logs.configure(options.log_level, options.log_format, redactor)
    try:
        config = load_config(options.config_file)
        redactor.update(a.rest_key.reveal() for a in config.accounts)
        config = select_accounts(config, options)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.debug("backfill", extra={"version": __version__, "accounts": len(config.accounts)})
    try:
        return eventloop.run(run(options, config))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; the answers so far are in {options.state_file}: "
            "rerun with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
