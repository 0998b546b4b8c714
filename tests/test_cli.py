"""The command line as a user runs it: subprocesses, exit codes, output, the demo scraped."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tooling import free_port

from exporter import __version__
from exporter.fakeapi import AccountState, FakeAccount, FakeApi
from exporter.metrics import METRIC_NAMES

EXE = [sys.executable, "-m", "exporter"]
GOOD_KEY, BAD_KEY = "cli-good-key-5c1e", "cli-bad-key-88d0"


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ)
    )


async def arun(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop (the fake API lives in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        *EXE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(GOOD_KEY, seed=3), FakeAccount(BAD_KEY, AccountState.INACTIVE)])
    await api.start()
    yield api
    await api.close()


def write_config(tmp_path: Path, url: str, names: dict[str, str]) -> tuple[Path, dict[str, str]]:
    accounts = [{"name": n, "rest_key_env": f"KEY_{i}"} for i, n in enumerate(names)]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"api": {"url": url, "timeout": "3s"}, "accounts": accounts}))
    env = dict(os.environ) | {f"KEY_{i}": key for i, key in enumerate(names.values())}
    return path, env


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"retargeting-exporter {__version__} (python 3.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--log.level=verbose"], "invalid choice: 'verbose'"),
        (["--web.listen-address=9817"], "expected [HOST]:PORT"),
        (["--web.listen-address=:99999"], "port must be a number from 0 to 65535"),
        (["--web.telemetry-path=/"], "--web.telemetry-path '/'"),
        (["--shard.count=2", "--shard.index=2"], "--shard.index must be from 0 to"),
        (["--demo", "--demo.interval=fast"], "--demo.interval: 'fast' is not a duration"),
        (["--web.read-header-timeout=soon"], "--web.read-header-timeout: 'soon' is not a"),
        (["--web.read-header-timeout=500ms"], "must be 0 (off) or at least 1s"),
        (["--web.max-connections-per-client=-1"], "--web.max-connections-per-client '-1': must"),
        (["--web.max-connections=many"], "--web.max-connections 'many': must be a whole number"),
    ],
)
def test_bad_flags_exit_2_without_traceback(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_prints_a_summary_without_secrets(tmp_path: Path) -> None:
    path, env = write_config(
        tmp_path, "https://api.example.test/ts", {"shop-a": GOOD_KEY, "shop-b": BAD_KEY}
    )
    result = run("--config.check", f"--config.file={path}", "--shard.count=2", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"configuration {path} is valid\n")
    assert (
        "  - shop-a: key from env KEY_0; windows 24h,30d; every 5m; 576 requests a day; labels -"
    ) in result.stdout
    assert "in shard 0/2" in result.stdout
    assert "API requests a day: 1152, 1152 in this shard (when every request" in result.stdout
    assert GOOD_KEY not in result.stdout + result.stderr and BAD_KEY not in result.stdout


def test_config_check_prints_the_requests_a_day(tmp_path: Path) -> None:
    """Per account and in total, from intervals, windows and refreshes: what polling will cost."""
    path = tmp_path / "config.yaml"
    accounts = [
        {"name": "hourly-30d", "rest_key_env": "KEY_0"},
        {
            "name": "slow",
            "rest_key_env": "KEY_0",
            "interval": "15m",
            "windows": ["24h", "yesterday"],
        },
    ]
    windows = ["24h", {"window": "30d", "refresh": "1h"}]
    path.write_text(yaml.safe_dump({"windows": windows, "accounts": accounts}))
    result = run("--config.check", f"--config.file={path}", env=dict(os.environ, KEY_0="k"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "windows: 24h, 30d(every 1h)" in lines
    assert [line.split("; ")[1:4] for line in lines if line.startswith("  - ")] == [
        ["windows 24h,30d(every 1h)", "every 5m", "312 requests a day"],  # 288 + 24
        ["windows 24h,yesterday(every 1h)", "every 15m", "120 requests a day"],  # 96 + 24
    ]
    assert lines[-1].startswith("API requests a day: 432 (")


PROXY_USER = "proxy-user-ZQ8"
ENCODED_PASSWORD = "proxy-pw-SECRETZQ9%2F%2B%3D"  # the password proxy-pw-SECRETZQ9/+=


def proxy_config(tmp_path: Path, proxy_url: str) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "config.yaml"
    accounts = [{"name": "shop-a", "rest_key_env": "KEY_0"}]
    path.write_text(yaml.safe_dump({"api": {"proxy_url": proxy_url}, "accounts": accounts}))
    path.chmod(0o644)  # readable by others: the warning must not show the password either
    return path, dict(os.environ) | {"KEY_0": GOOD_KEY}


def assert_no_proxy_credentials(text: str) -> None:
    assert "ZQ8" not in text and "SECRETZQ9" not in text  # no user, no password, any spelling


def test_config_check_summary_shows_no_proxy_credentials(tmp_path: Path) -> None:
    path, env = proxy_config(tmp_path, f"http://{PROXY_USER}:{ENCODED_PASSWORD}@proxy.example:3128")
    result = run("--config.check", f"--config.file={path}", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"configuration {path} is valid\n")
    assert "holds the proxy password in api.proxy_url" in result.stdout + result.stderr
    assert_no_proxy_credentials(result.stdout + result.stderr)


def test_config_check_names_a_bad_proxy_url_without_its_credentials(tmp_path: Path) -> None:
    path, env = proxy_config(
        tmp_path, f"https://{PROXY_USER}:{ENCODED_PASSWORD}@proxy.example:3128"
    )
    result = run("--config.check", f"--config.file={path}", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"invalid configuration {path}:" in result.stderr
    assert "api.proxy_url: must be an http:// URL: https:// proxies" in result.stderr
    assert_no_proxy_credentials(result.stdout + result.stderr)


async def test_once_succeeds_when_every_account_does(fake: FakeApi, tmp_path: Path) -> None:
    path, env = write_config(tmp_path, fake.url, {"shop-a": GOOD_KEY})
    code, out, err = await arun("--once", f"--config.file={path}", env=env)
    assert code == 0, err
    families = {f.name for f in text_string_to_metric_families(out)}
    assert {
        "retargeting_impressions",
        "retargeting_up",
        "retargeting_exporter_build_info",
    } <= families
    assert 'retargeting_up{account="shop-a"} 1' in out
    assert GOOD_KEY not in out + err


async def test_once_exits_1_when_an_account_fails(fake: FakeApi, tmp_path: Path) -> None:
    path, env = write_config(tmp_path, fake.url, {"shop-a": GOOD_KEY, "shop-b": BAD_KEY})
    code, out, err = await arun("--once", f"--config.file={path}", env=env)
    assert code == 1
    assert 'retargeting_up{account="shop-b"} 0' in out
    assert 'retargeting_api_errors_total{account="shop-b",reason="account_inactive"} 2' in out
    assert "some accounts failed" in err and "shop-b" in err
    assert BAD_KEY not in out + err


def test_once_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run("--once", f"--config.file={tmp_path / 'missing.yaml'}")
    assert result.returncode == 2
    assert (
        f"invalid configuration {tmp_path / 'missing.yaml'}:\n  - file not found" in result.stderr
    )


def wait_http(url: str, timeout: float = 20, status: int = 200) -> bytes:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == status:
                    return bytes(response.read())
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} in {timeout}s: {last}")


def test_demo_serves_real_metrics_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*EXE, "--demo", "--demo.interval=2s", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/-/ready")
        text = wait_http(f"{base}/metrics").decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        up = {s.labels["account"]: s.value for s in families["retargeting_up"].samples}
        assert up == {
            "demo-fashion": 1,
            "demo-electronics": 1,
            "demo-garden": 1,
            "demo-inactive": 0,
            "demo-revoked": 0,
        }
        sources = {s.labels["source_name"] for s in families["retargeting_clicks"].samples}
        assert sources == {"Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups", "SMS"}
        names = {n for n in families if n.startswith("retargeting_")}
        assert names <= {n.removesuffix("_total") for n in METRIC_NAMES}
        page = wait_http(f"{base}/").decode()
        assert "demo-revoked" in page and "invalid_key" in page
        assert "demo-key-" not in text + page
        assert wait_http(f"{base}/-/healthy") == b"Healthy.\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"metrics:     http://127.0.0.1:{port}/metrics" in out
    assert "Traceback" not in err and "demo-key-" not in out + err
    assert 'msg="account down" account=demo-revoked reason=invalid_key' in err


def test_port_in_use_exits_1_with_a_clear_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("--demo", f"--web.listen-address=127.0.0.1:{port}", timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_format() -> None:
    import json

    port = free_port()
    proc = subprocess.Popen(
        [*EXE, "--demo", "--log.format=json", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    records = [json.loads(line) for line in err.splitlines()]
    assert proc.returncode == 0
    down = [r for r in records if r["msg"] == "account down"]
    assert {r["account"] for r in down} == {"demo-inactive", "demo-revoked"}
    assert all(r["level"] == "warn" for r in down)
