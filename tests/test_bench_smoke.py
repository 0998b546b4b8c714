"""The benchmark harness at a small size, as a correctness smoke test (never timings).

It runs exactly what ``python -m bench`` runs: the fake API, the real exporter daemon and the
naive baseline, each in its own process. It checks that every account was polled and that
``/metrics`` (plain and gzip) is complete and parses; the harness itself checks that every family
has the expected number of samples. Timings are printed by the harness, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tooling import REPO, free_ports

ACCOUNTS = 50


def test_harness_polls_every_account_and_serves_a_complete_exposition(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "bench", "--accounts", str(ACCOUNTS), "--latency", "0.001",
        "--scrapes", "3", "--naive-scrapes", "1", "--poll-scrape-every", "0.2",
        "--lag-window", "0.5", "--workdir", str(tmp_path / "run"), "--json", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    [result] = json.loads(out.read_text())
    assert result["ok"] and result["problems"] == []
    assert result["accounts_polled"] == ACCOUNTS
    # Every account: 4 sources x 2 windows x 6 traffic figures, plus its own series.
    assert result["samples"] >= ACCOUNTS * (4 * 2 * 6 + 10)
    assert result["scrape_gzip"]["size"] > 0 and result["naive_raw"]["size"] > 0
    # The table is printed, and the exposition kept in the work directory parses.
    assert "| poll cycle (in the exporter) |" in run.stdout
    text = (tmp_path / "run" / str(ACCOUNTS) / "metrics.prom").read_text()
    assert text.count('retargeting_up{account="shop-') == ACCOUNTS


def test_harness_reports_an_incomplete_exposition(tmp_path: Path) -> None:
    # The check must be able to fail: an exposition missing an account is reported.
    sys.path.insert(0, str(REPO))
    from bench.harness import Settings, check_exposition

    text = (REPO / "tests" / "golden" / "exposition.prom").read_text()
    problems, samples, _ = check_exposition(text, Settings(accounts=ACCOUNTS))
    assert samples > 0
    assert any("expected" in p for p in problems)


def test_client_layers_benchmark_runs_and_every_request_succeeds() -> None:
    # bench/client.py raises if any request of any layer fails; its timings are not judged.
    command = [sys.executable, "-m", "bench.client", "--requests", "200", "--repeat", "1"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    layers = [line.split()[0] for line in run.stdout.splitlines()[1:]]
    assert layers == ["aiohttp", "http", "client", "poller"]


def test_free_ports_are_different_ports() -> None:
    """Chosen one at a time, the kernel may hand out one port twice (it did: the exporter then
    could not listen, the fake had its port); chosen together they never collide."""
    ports = free_ports(64)
    assert len(set(ports)) == 64 and all(1024 <= p < 65536 for p in ports)
