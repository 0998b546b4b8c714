"""Backfill: recreate the exporter's traffic series for past times, as OpenMetrics for promtool.

For every configured account and window, and every step of a time range, the window ending at
that step is requested from the API and written with the step as its timestamp, under the same
metric names and labels as the live exporter. ``promtool tsdb create-blocks-from openmetrics``
turns the file into TSDB blocks for Prometheus, so dashboards and alert baselines have history
from day one.

Requests go through the live path (:func:`exporter.fetch.fetch_with_retries`): the same client,
concurrency limit, retries, back-off and error classification. Every answer is appended to a
state file (JSON lines) as it arrives; ``--resume`` reads it back and requests only what is
missing or failed. The output is rendered from the state at the end and replaced atomically.

The pieces: :mod:`.plan` (what to request), :mod:`.state` (the state file), :mod:`.execute`
(sending the requests), :mod:`.output` (the OpenMetrics file), :mod:`.report` (cost and
failures for the user) and :mod:`.command` (flags, confirmation, the run, exit codes).
"""

from exporter.backfill.command import (
    EXIT_INTERRUPTED,
    PROG,
    Options,
    build_parser,
    confirm,
    main,
    parse_options,
    parse_time,
    run,
    select_accounts,
)
from exporter.backfill.execute import Outcome, Progress, execute
from exporter.backfill.output import render_openmetrics, write_atomically
from exporter.backfill.plan import Plan, Point, Request, Result, make_plan, step_times
from exporter.backfill.report import describe_cost, failure_report
from exporter.backfill.state import StateFile, read_state
from exporter.flags import UsageError

__all__ = [
    "EXIT_INTERRUPTED",
    "PROG",
    "Options",
    "Outcome",
    "Plan",
    "Point",
    "Progress",
    "Request",
    "Result",
    "StateFile",
    "UsageError",
    "build_parser",
    "confirm",
    "describe_cost",
    "execute",
    "failure_report",
    "main",
    "make_plan",
    "parse_options",
    "parse_time",
    "read_state",
    "render_openmetrics",
    "run",
    "select_accounts",
    "step_times",
    "write_atomically",
]
