"""What the user is told: the run's size and API cost before, the failures after."""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.backfill.execute import Outcome
from exporter.backfill.plan import Plan, Result
from exporter.config import Config
from exporter.yamlcheck import format_duration

_FAILURES_SHOWN_PER_ACCOUNT = 10


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
