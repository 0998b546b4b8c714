"""The benchmark's scenarios at a tiny scale, as correctness smoke tests (never timings).

They run exactly what ``python -m bench`` runs: the fake API on aiohttp's server (keeping its
records) and the real exporter daemon, each in its own process. They check that every account
was polled, once per interval in the steady phase, that ``/metrics`` is complete and that the
tables have their rows. Timings are printed by the harness, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tooling import REPO, free_ports

from bench.harness import Settings, check_exposition
from bench.traffic import Record, steady_traffic

TINY = ["--latency", "0.001", "--poll-scrape-every", "0.2", "--lag-window", "0.5"]


def bench(tmp_path: Path, *args: str) -> tuple[list[dict[str, object]], str]:
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", *args, "--workdir", str(tmp_path / "run")]
    run = subprocess.run(
        [*command, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text()), run.stdout


def rows_missing(table: str, *rows: str) -> list[str]:
    return [row for row in rows if f"| {row} |" not in table]


def test_capacity_scenario_polls_every_account_and_serves_a_complete_exposition(
    tmp_path: Path,
) -> None:
    accounts = 50
    results, table = bench(
        tmp_path, "--scenario", "capacity", "--accounts", str(accounts), "--scrapes", "3",
        "--event-loop", "uvloop,asyncio", *TINY,
    )  # fmt: skip
    # The A/B switch: one column per event loop, and each run was on the loop it names (the
    # harness reads the exporter's "listening" line and reports a mismatch as a problem).
    assert [r["event_loop"] for r in results] == ["uvloop", "asyncio"]
    for result in results:
        assert result["ok"] and result["problems"] == []
        assert result["accounts_polled"] == accounts
        # Every account: 4 sources x 2 windows x 6 traffic figures, plus its own series.
        assert result["samples"] >= accounts * (4 * 2 * 6 + 10)
        assert result["scrape_gzip"]["size"] > 0  # type: ignore[index]
    assert "| capacity: 50 x 2, C 200, 1 ms, interval 5m | uvloop | asyncio | target |" in table
    assert not rows_missing(
        table, "start-up cycle (in the exporter) ÷ bound", "peak RSS",
        "/metrics median / p99, gzip, nothing changed", "max event-loop lag while scraping",
    ), table  # fmt: skip
    assert "steady phase" not in table  # capacity has none
    assert "At commit `" in table and "load average" in table
    text = (tmp_path / "run" / "uvloop-1" / "metrics.prom").read_text()
    assert text.count('retargeting_up{account="shop-') == accounts


def test_realistic_scenario_polls_every_account_once_per_interval(tmp_path: Path) -> None:
    # The shortest interval the exporter accepts; its steady phase starts half an interval
    # after start-up, so this test takes 45 s, nearly all of it waiting.
    accounts = 20
    results, table = bench(
        tmp_path, "--scenario", "realistic", "--accounts", str(accounts), "--interval", "30s",
        "--steady-intervals", "1", "--steady-every", "5", *TINY,
    )  # fmt: skip
    [result] = results
    assert result["ok"] and result["accounts_polled"] == accounts
    traffic = result["steady"]["traffic"]  # type: ignore[index]
    assert traffic["polls_per_interval"] == {"0": 0, "1": accounts, "2+": 0}
    assert traffic["requests"] == accounts * 2 and traffic["failed"] == 0
    assert not rows_missing(
        table, "start-up cycle (in the exporter) ÷ bound",
        "requests/s at the vendor: mean / busiest second", "exporter CPU per API request",
        "exporter RSS, steady (median)",
    ), table  # fmt: skip
    assert f"| account-intervals polled 0 / 1 / 2+ times | 0 / {accounts} / 0 | all once |" in table


def test_steady_traffic_finds_bursts_and_accounts_polled_twice_or_never() -> None:
    # Three 60 s intervals from t=100: "a" every 60 s; "b" twice in the first interval and
    # never in the second; "c" every 60 s, once with a retry (one poll, not two); the four
    # requests of a and b at 110 s come in one second (the busiest).
    def poll(key: str, at: float) -> list[Record]:
        return [Record(at, key, 200), Record(at + 0.01, key, 200)]

    records = sorted(
        poll("a", 110) + poll("a", 170) + poll("a", 230)
        + poll("b", 110.5) + poll("b", 145) + poll("b", 250)
        + poll("c", 120) + [Record(180, "c", 503), Record(182, "c", 200)] + poll("c", 240)
    )  # fmt: skip
    traffic = steady_traffic(records, ["a", "b", "c"], 100.0, 60.0, 3)
    assert traffic.requests == 18 and traffic.failed == 1
    assert traffic.polls_per_interval == {"0": 1, "1": 7, "2+": 1}
    assert traffic.peak_rate == 4 and traffic.burst_ratio == 4 / (18 / 180)
    assert traffic.gaps == (34.5, 60, 105)  # b's double poll, the others, b's missed interval


def test_harness_reports_an_incomplete_exposition() -> None:
    # The check must be able to fail: an exposition missing an account is reported.
    text = (REPO / "tests" / "golden" / "exposition.prom").read_text()
    problems, samples, _ = check_exposition(text, Settings(accounts=50))
    assert samples > 0
    assert any("expected" in p for p in problems)


def test_free_ports_are_different_ports() -> None:
    """Chosen one at a time, the kernel may hand out one port twice (it did: the exporter then
    could not listen, the fake had its port); chosen together they never collide."""
    ports = free_ports(64)
    assert len(set(ports)) == 64 and all(1024 <= p < 65536 for p in ports)
