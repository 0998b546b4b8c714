"""``retargeting-exporter backfill``: past windows from the API as OpenMetrics for promtool.

Unit level: the file format, the atomic write, resume, failure reports and the cost check, all
against the fake API on 127.0.0.1. End to end: a few days backfilled at a coarse step, imported
with the real ``promtool``, served by a real Prometheus and queried at past instants: the values
are what the fake API answers for those windows, and the CTR-drop alert's baseline has data.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from tooling import REPO, free_port, require_tool

from exporter import backfill, cli
from exporter.config import Config, parse_config
from exporter.fakeapi import FakeAccount, FakeApi, Fault, traffic_rows
from exporter.metrics import TRAFFIC_FIELDS
from exporter.yamlcheck import parse_duration

ENV = {"KEY_A": "key-a", "KEY_B": "key-b"}
ACCOUNT_A = FakeAccount("key-a", seed=1)
ACCOUNT_B = FakeAccount("key-b", seed=2)
FAMILIES = [family.name for family, _ in TRAFFIC_FIELDS]
# API field and the factor that turns it into the exported value, per family.
API_FIELDS = {
    "retargeting_impressions": ("impressions", 1.0),
    "retargeting_clicks": ("click", 1.0),
    "retargeting_orders": ("order", 1.0),
    "retargeting_revenue": ("revenue", 1.0),
    "retargeting_ctr_ratio": ("ctr", 0.01),
    "retargeting_cvr_ratio": ("cvr", 0.01),
}
FROM, TO = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def expected_value(
    account: FakeAccount, family: str, source: str, bounds: tuple[int, int]
) -> float:
    row = next(r for r in traffic_rows(account, *bounds) if r["source_name"] == source)
    field, factor = API_FIELDS[family]
    return float(row[field]) * factor  # type: ignore[arg-type]


def local_midnight(step: int, zone: str) -> int:
    """Computed differently from the exporter: the local date's midnight, made aware."""
    local = datetime.fromtimestamp(step, ZoneInfo(zone))
    return int(datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)).timestamp())


def make_config(url: str, **top: Any) -> Config:
    data: dict[str, Any] = {
        "api": {"url": url, "max_concurrency": 1, "retries": {"initial_backoff": "0s"}},
        "windows": ["24h"],
        "accounts": [
            {"name": "shop-a", "rest_key_env": "KEY_A"},
            {"name": "shop-b", "rest_key_env": "KEY_B"},
        ],
    }
    data.update(top)
    return parse_config(data, env=ENV)


def options(out: Path, *extra: str, start: str = FROM, end: str = TO) -> backfill.Options:
    argv = ["--output", str(out), "--from", start, "--to", end, "--step", "6h", *extra]
    return backfill.parse_options(argv, time.time())


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([ACCOUNT_A, ACCOUNT_B])
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input is not a terminal unless a test says so."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def samples_by_series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]]:
    """Parse with prometheus_client's strict OpenMetrics parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for sample in family.samples:
            out.setdefault((sample.name, tuple(sorted(sample.labels.items()))), []).append(sample)
    return out


# --- the file -----------------------------------------------------------------------------------


async def test_file_holds_the_apis_answers_in_promtools_layout(
    fake: FakeApi, tmp_path: Path
) -> None:
    config = make_config(
        fake.url,
        accounts=[
            {"name": "shop-a", "rest_key_env": "KEY_A", "windows": ["24h", "today"],
             "timezone": "America/New_York"},
            {"name": 'shop "b"', "rest_key_env": "KEY_B"},
        ],
    )  # fmt: skip
    out = tmp_path / "history.om"
    code = await backfill.run(options(out, "--label", "job=retargeting"), config)
    assert code == 0
    text = out.read_text()
    assert text.endswith("\n# EOF\n")
    steps = [ts(FROM) + i * 6 * 3600 for i in range(5)]

    # Families in TRAFFIC_FIELDS order, each declared once, its samples contiguous.
    declared = re.findall(r"^# TYPE (\S+) gauge$", text, re.M)
    assert declared == FAMILIES
    names_in_order = [line.split("{")[0] for line in text.splitlines() if not line.startswith("#")]
    assert names_in_order == sorted(names_in_order, key=FAMILIES.index)

    series = samples_by_series(text)
    # 4 sources x (2 windows of shop-a + 1 of shop-b) series per family.
    assert len(series) == len(FAMILIES) * 4 * 3
    for (name, labels), samples in series.items():
        label = dict(labels)
        assert set(label) == {"account", "source_name", "window", "job"}
        assert label["job"] == "retargeting"
        stamps = [int(float(s.timestamp)) for s in samples]
        assert stamps == steps  # every step, in time order, timestamps in seconds
        account = ACCOUNT_A if label["account"] == "shop-a" else ACCOUNT_B
        for sample in samples:
            step = int(float(sample.timestamp))
            if label["window"] == "today":
                bounds = (local_midnight(step, "America/New_York"), step)
            else:
                bounds = (step - 86400, step)
            expected = expected_value(account, name, label["source_name"], bounds)
            assert sample.value == pytest.approx(expected, rel=1e-12), (name, label, step)
    # Quotes in label values are escaped, not breaking the line.
    assert 'account="shop \\"b\\""' in text


def test_empty_result_is_still_a_valid_file() -> None:
    assert backfill.render_openmetrics([], {}) == "# EOF\n"


def test_steps_are_aligned_to_the_step_so_reruns_meet_the_same_points() -> None:
    hour = 3600
    assert backfill.step_times(10 * hour + 1, 13 * hour, hour) == (11 * hour, 12 * hour, 13 * hour)
    assert backfill.step_times(10 * hour, 10 * hour, hour) == (10 * hour,)
    assert backfill.step_times(ts("2024-05-01T01:00:00Z"), ts(TO), 6 * hour)[0] == ts(
        "2024-05-01T06:00:00Z"
    )


def test_yesterday_is_requested_once_per_day_not_once_per_step() -> None:
    config = make_config("http://127.0.0.1:9/x", windows=["yesterday"], timezone="Europe/Bucharest")
    config = backfill.select_accounts(config, options(Path("x"), "--account", "shop-a"))
    steps = backfill.step_times(ts(FROM), ts(TO), 3600)
    plan = backfill.make_plan(config, steps)
    assert len(plan.points) == 25
    # 00:00Z is 03:00 in Bucharest (UTC+3): the steps up to 20:00Z fall on local May 1, the
    # four from 21:00Z (local midnight) on May 2. One request per local day.
    assert len(plan.requests) == 2
    assert sorted(len(r.points) for r in plan.requests) == [4, 21]


def test_today_at_local_midnight_has_no_sample() -> None:
    config = make_config("http://127.0.0.1:9/x", windows=["today"])
    plan = backfill.make_plan(config, backfill.step_times(ts(FROM), ts(TO), 6 * 3600))
    # Midnight UTC on both days, for both accounts: a window of no length is not requested.
    assert plan.empty == 4
    assert len(plan.points) == len(plan.requests) == 6


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "history.om"
    out.write_text("old complete file\n# EOF\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        backfill.write_atomically(out, "new\n# EOF\n")
    assert out.read_text() == "old complete file\n# EOF\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.om"]  # no temp file left behind
    monkeypatch.undo()
    backfill.write_atomically(out, "new\n# EOF\n")
    assert out.read_text() == "new\n# EOF\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.om"]


# --- failures -----------------------------------------------------------------------------------


async def test_transient_errors_are_retried_like_the_live_poller(
    fake: FakeApi, tmp_path: Path
) -> None:
    config = make_config(fake.url)
    fake.set_fault(Fault.HTML_5XX, key="key-a", count=2)
    code = await backfill.run(options(tmp_path / "h.om"), config)
    assert code == 0
    # 5 steps per account; shop-a's first request took three attempts (api.retries.attempts).
    assert fake.count("key-a") == 5 + 2
    assert fake.count("key-b") == 5


async def test_failures_are_reported_per_account_and_step(
    fake: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(fake.url)
    fake.remove_account("key-b")  # the vendor says "Incorrect rest key!"
    fake.set_fault(Fault.HTML_5XX, key="key-a", count=3)  # shop-a's first step fails 3 times
    out = tmp_path / "h.om"
    code = await backfill.run(options(out), config)
    assert code == 1
    err = capsys.readouterr().err
    assert "account shop-a: 1 window(s) failed" in err
    assert "  step 2024-05-01T00:00:00Z window 24h: http_error: HTTP 502 without an API body" in err
    # A rejected key stops that account: its other requests would fail the same way.
    assert (
        "account shop-b: 1 window(s) failed, 4 not requested "
        "(stopped after invalid_key: Incorrect rest key!)"
    ) in err
    assert "  step 2024-05-01T00:00:00Z window 24h: invalid_key: Incorrect rest key!" in err
    assert fake.count("key-b") == 1
    assert "rerun with --resume" in err
    # What succeeded is written all the same.
    series = samples_by_series(out.read_text())
    assert {dict(k[1])["account"] for k in series} == {"shop-a"}
    assert all(len(v) == 4 for v in series.values())
    # No key in the report, the state file or the output.
    for text in (err, out.read_text(), Path(f"{out}.state.jsonl").read_text()):
        assert "key-a" not in text and "key-b" not in text


# --- resume -------------------------------------------------------------------------------------


async def test_resume_requests_only_what_is_missing(fake: FakeApi, tmp_path: Path) -> None:
    config = make_config(fake.url)
    fresh = tmp_path / "fresh.om"
    assert await backfill.run(options(fresh), config) == 0
    fake.clear_requests()

    out = tmp_path / "h.om"
    fake.set_fault(Fault.HTML_5XX, key="key-a", count=3)  # shop-a's first step fails
    assert await backfill.run(options(out), config) == 1
    fake.clear_requests()

    # A torn last line (the previous run killed mid-write) is skipped, not fatal.
    state = Path(f"{out}.state.jsonl")
    state.write_text(state.read_text() + '{"account":"shop-a","wind')
    assert await backfill.run(options(out, "--resume"), config) == 0
    assert [(r.rest_key, r.date_to) for r in fake.requests] == [("key-a", str(ts(FROM)))]
    assert out.read_text() == fresh.read_text()

    # A longer range later: only the new steps are requested.
    fake.clear_requests()
    earlier = "2024-04-30T12:00:00Z"
    assert await backfill.run(options(out, "--resume", start=earlier), config) == 0
    assert sorted(r.date_to for r in fake.requests) == sorted(
        [str(ts(earlier)), str(ts(earlier) + 6 * 3600)] * 2
    )
    labels = (("account", "shop-b"), ("source_name", "Newsletter"), ("window", "24h"))
    assert len(samples_by_series(out.read_text())[("retargeting_clicks", labels)]) == 7


async def test_without_resume_the_state_starts_afresh(fake: FakeApi, tmp_path: Path) -> None:
    config = make_config(fake.url)
    out = tmp_path / "h.om"
    assert await backfill.run(options(out), config) == 0
    fake.clear_requests()
    assert await backfill.run(options(out), config) == 0
    assert fake.count() == 10
    lines = Path(f"{out}.state.jsonl").read_text().splitlines()
    assert len(lines) == 10 and all(json.loads(line)["rows"] for line in lines)


async def test_a_changed_window_definition_is_requested_again(
    fake: FakeApi, tmp_path: Path
) -> None:
    out = tmp_path / "h.om"
    utc = make_config(fake.url, windows=["yesterday"])
    assert await backfill.run(options(out), utc) == 0
    fake.clear_requests()
    # Same window name, other zone: other bounds, so the saved answers do not count.
    bucharest = make_config(fake.url, windows=["yesterday"], timezone="Europe/Bucharest")
    assert await backfill.run(options(out, "--resume"), bucharest) == 0
    assert fake.count() > 0


# --- cost -----------------------------------------------------------------------------------------


async def test_cost_is_shown_and_large_runs_need_yes_without_a_terminal(
    fake: FakeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(backfill.command, "CONFIRM_ABOVE", 9)
    config = make_config(fake.url)
    out = tmp_path / "h.om"
    with pytest.raises(
        backfill.UsageError, match=r"refusing to send 10 API requests .* pass --yes"
    ):
        await backfill.run(options(out), config)
    assert fake.count() == 0 and not out.exists()
    err = capsys.readouterr().err
    assert "2 account(s) with 2 window(s) in all x 5 steps = 10 windows to fill" in err
    assert "API requests to send: 10" in err

    assert await backfill.run(options(out, "--yes"), config) == 0
    assert fake.count() == 10


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "sent"), [("y\n", 10), ("\n", 0), ("no\n", 0)])
async def test_on_a_terminal_large_runs_ask_first(
    fake: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, sent: int
) -> None:
    monkeypatch.setattr(backfill.command, "CONFIRM_ABOVE", 9)
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    run = backfill.run(options(tmp_path / "h.om"), make_config(fake.url))
    if sent:
        assert await run == 0
    else:
        with pytest.raises(backfill.UsageError, match="aborted"):
            await run
    assert fake.count() == sent


def test_refusal_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backfill.command, "CONFIRM_ABOVE", 1)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api": {"url": "http://127.0.0.1:9/never"},
                "accounts": [{"name": "shop-a", "rest_key_env": "KEY_A"}],
            }
        )
    )
    monkeypatch.setenv("KEY_A", "key-a")
    code = cli.main(
        ["backfill", "--config.file", str(config), "--days", "1", "--output", str(tmp_path / "o")]
    )
    assert code == 2
    assert "standard input is not a terminal; pass --yes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--days", "1", "--from", FROM], "give --days or --from, not both"),
        ([], "say how far back: --days N, or --from TIME [--to TIME]"),
        (["--from", TO, "--to", FROM], "--from must be before --to"),
        (["--from", "2024-05-01T00:00:00"], "give the UTC offset"),
        (["--from", "yesterday"], "expected a date (2024-05-01) or RFC 3339 time"),
        (["--days", "1", "--to", "2999-01-01"], "--to: must not be in the future"),
        (
            ["--days", "1", "--step", "30s"],
            "--step: must be a whole number of seconds, at least 1m",
        ),
        (["--days", "1", "--label", "window=x"], "window is set by the backfill itself"),
        (["--days", "1", "--label", "job"], "expected NAME=VALUE"),
        (["--days", "1", "--shard.count", "2", "--shard.index", "2"], "--shard.index must be"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(backfill.UsageError, match=re.escape(message)):
        backfill.parse_options(["--output", "o", *argv], time.time())


def test_dates_and_rfc3339_times() -> None:
    assert backfill.parse_time("2024-05-01", "--from") == ts("2024-05-01T00:00:00Z")
    assert backfill.parse_time("2024-05-01T03:00:00+03:00", "--from") == ts(FROM)
    assert backfill.parse_time("2024-05-01T00:00:00Z", "--from") == ts(FROM)


def test_accounts_and_shards_are_selected() -> None:
    config = make_config("http://127.0.0.1:9/x")
    chosen = backfill.select_accounts(config, options(Path("o"), "--account", "shop-b"))
    assert [a.name for a in chosen.accounts] == ["shop-b"]
    with pytest.raises(backfill.UsageError, match="not in <memory>: shop-z"):
        backfill.select_accounts(config, options(Path("o"), "--account", "shop-z"))
    halves = [
        backfill.select_accounts(
            config, options(Path("o"), "--shard.count", "2", "--shard.index", str(i))
        ).accounts
        for i in (0, 1)
    ]
    assert sorted(a.name for half in halves for a in half) == ["shop-a", "shop-b"]


# --- end to end: promtool and a real Prometheus ---------------------------------------------------


@contextlib.contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def wait_for(
    check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited while waiting for {what}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def query(base: str, expr: str, at: float) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": str(at)})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def ctr_baseline_expression() -> str:
    """The baseline part of the RetargetingCTRDrop alert, as the rules file has it."""
    rules = yaml.safe_load((REPO / "prometheus" / "alerts.yml").read_text())
    expr = next(
        rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "RetargetingCTRDrop"
    )
    start = expr.index("avg_over_time(")
    depth, end = 0, start
    for end in range(start, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[end], 0)
        if expr[end] == ")" and depth == 0:
            break
    baseline = expr[start : end + 1]
    offset = re.match(r"\s*offset\s+(\w+)", expr[end + 1 :])
    return baseline + (f" offset {offset.group(1)}" if offset else "")


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_backfilled_history_in_a_real_prometheus(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    prometheus = require_tool("prometheus")
    step = 6 * 3600
    end = int(time.time()) // step * step  # recent: inside Prometheus' default 15d retention
    fake = FakeApi([ACCOUNT_A, ACCOUNT_B])
    url = await fake.start()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api": {"url": url},
                "windows": ["24h"],
                "accounts": [
                    {"name": "shop-a", "rest_key_env": "KEY_A", "windows": ["24h", "today"],
                     "timezone": "America/New_York"},
                    {"name": "shop-b", "rest_key_env": "KEY_B"},
                ],
            }
        )
    )  # fmt: skip
    out = tmp_path / "history.om"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter", "backfill", "--config.file", str(config),
            "--days", "3", "--to", datetime.fromtimestamp(end).astimezone().isoformat(),
            "--step", "6h", "--output", str(out), "--label", "job=retargeting",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **ENV}, cwd=REPO,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        await fake.close()
    assert process.returncode == 0, stderr.decode()
    assert b"\x1b[" not in stderr  # no progress bar without a terminal
    steps = backfill.step_times(end - 3 * 86400, end, step)
    assert len(steps) == 13

    data = tmp_path / "data"
    imported = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(out), str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr

    (tmp_path / "prometheus.yml").write_text("global:\n  evaluation_interval: 1m\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    args = [
        prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with running(args, log) as server:

        def ready() -> bool:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return response.status == 200

        wait_for(ready, "/-/ready", server, log)

        # A past instant: the value is what the API answers for the window ending then.
        past = steps[5]
        for window, bounds in (
            ("24h", (past - 86400, past)),
            ("today", (local_midnight(past, "America/New_York"), past)),
        ):
            for family in ("retargeting_impressions", "retargeting_ctr_ratio"):
                expr = (
                    f'{family}{{job="retargeting",account="shop-a",'
                    f'source_name="Newsletter",window="{window}"}}'
                )
                result = query(base, expr, past)
                assert len(result) == 1, (expr, result)
                value = float(result[0]["value"][1])
                assert value == pytest.approx(
                    expected_value(ACCOUNT_A, family, "Newsletter", bounds), rel=1e-12
                )

        # The CTR-drop alert's baseline, as written in prometheus/alerts.yml, has data on the
        # backfilled history: the mean of the hourly subquery points that found a sample.
        baseline = ctr_baseline_expression()
        assert baseline.startswith("avg_over_time(retargeting_ctr_ratio")
        at = end + 1800  # between steps, so no sample sits on a range boundary
        result = query(base, baseline, at)
        by_series = {(r["metric"]["account"], r["metric"]["source_name"]): r for r in result}
        assert len(by_series) == 8, result  # 2 accounts x 4 sources, window 24h only
        match = re.search(r"\[(\w+):(\w+)\](?:\s*offset\s+(\w+))?", baseline)
        assert match is not None
        span, offset = parse_duration(match.group(1)), parse_duration(match.group(3) or "0s")
        last = at - offset
        used = [s for s in steps if last - span <= s <= last]
        assert used  # the history reaches back into the baseline's range
        for (account_name, source), series in by_series.items():
            account = ACCOUNT_A if account_name == "shop-a" else ACCOUNT_B
            values = [
                expected_value(account, "retargeting_ctr_ratio", source, (s - 86400, s))
                for s in used
            ]
            assert float(series["value"][1]) == pytest.approx(sum(values) / len(values))

        # And the alert's ratio (current / baseline) evaluates on the history.
        ratio = f'retargeting_ctr_ratio{{window="24h"}} / {baseline}'
        assert len(query(base, ratio, end)) == 8
