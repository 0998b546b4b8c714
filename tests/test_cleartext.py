"""A rest key over plain http:// to another machine: one warning at start, one per reload that
sends a key in clear anew; naming the account, never the key.

The remote API host is only ever named: requests go to a closed loopback port given as
``api.proxy_url``, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tooling import free_port

from exporter.config import load_config
from exporter.daemon import Daemon

KEY_A, KEY_A2, KEY_B = "clear-a-5f0e9c", "clear-a-rotated-81d2", "clear-b-c47a10"
REMOTE = "http://api.example.test/v1/partners-api/traffic-source"


def write_config(path: Path, url: str, accounts: dict[str, str]) -> Path:
    """``accounts``: name -> key, each in its own key file beside the config."""
    for name, key in accounts.items():
        (path.parent / f"{name}.key").write_text(key + "\n")
    data: dict[str, Any] = {
        "api": {
            "url": url,
            "proxy_url": f"http://127.0.0.1:{free_port()}",
            "retries": {"attempts": 1},
        },
        "accounts": [{"name": n, "rest_key_file": f"{n}.key"} for n in accounts],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def run(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={config}", "--log.format=json", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def clear_warnings(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["msg"].startswith("rest key sent in clear")]


def test_a_remote_http_url_warns_once_per_account_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml", REMOTE, {"shop-a": KEY_A, "shop-b": KEY_B})
    result = run(config, "--once")
    assert result.returncode == 1  # the closed proxy port: both polls fail
    warnings = clear_warnings(result.stderr)
    assert sorted((w["level"], w["account"], w["api_host"]) for w in warnings) == [
        ("warn", "shop-a", "api.example.test"),
        ("warn", "shop-b", "api.example.test"),
    ]
    for output in (result.stderr, result.stdout):
        assert KEY_A not in output
        assert KEY_B not in output

    checked = run(config, "--config.check")
    assert checked.returncode == 0
    assert (
        "warning: account shop-a: its rest key is sent in clear to api.example.test "
        "(api.url is http://)" in checked.stdout
    )
    assert KEY_A not in checked.stdout


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.test/traffic-source",
        "http://127.0.0.1:1/traffic-source",
        "http://127.8.9.10:1/traffic-source",
        "http://[::1]:1/traffic-source",
        "http://localhost:1/traffic-source",
        "http://fake.localhost:1/traffic-source",
    ],
)
def test_https_or_loopback_says_nothing(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path / "config.yml", url, {"shop-a": KEY_A})
    result = run(config, "--once")
    assert result.returncode == 1  # the closed proxy port (or nothing on port 1)
    assert "poll" in result.stderr  # it did start and poll
    assert "in clear" not in result.stdout + result.stderr


async def test_each_reload_warns_only_for_keys_it_sends_in_clear_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yml"
    write_config(path, "https://api.example.test/traffic-source", {"shop-a": KEY_A})
    daemon = Daemon(
        load_config(path), load=lambda: load_config(path), listen_host=None, listen_port=0
    )

    async def reload_warns(url: str, accounts: dict[str, str]) -> list[tuple[str, str]]:
        write_config(path, url, accounts)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert await daemon.reload() == (True, "configuration reloaded")
        text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
        for key in (KEY_A, KEY_A2, KEY_B):
            assert key not in text
        return [
            (r.__dict__["account"], r.__dict__["api_host"])
            for r in caplog.records
            if r.getMessage().startswith("rest key sent in clear")
        ]

    try:
        assert await reload_warns(REMOTE, {"shop-a": KEY_A}) == [("shop-a", "api.example.test")]
        # Nothing changed: said once is enough.
        assert await reload_warns(REMOTE, {"shop-a": KEY_A}) == []
        # Another account joins: only its key is news.
        assert await reload_warns(REMOTE, {"shop-a": KEY_A, "shop-b": KEY_B}) == [
            ("shop-b", "api.example.test")
        ]
        # A rotated key is another secret in clear.
        assert await reload_warns(REMOTE, {"shop-a": KEY_A2, "shop-b": KEY_B}) == [
            ("shop-a", "api.example.test")
        ]
        # Another remote host: the same keys now reach other ears.
        other = "http://10.20.30.40:8080/traffic-source"
        assert sorted(await reload_warns(other, {"shop-a": KEY_A2, "shop-b": KEY_B})) == [
            ("shop-a", "10.20.30.40"),
            ("shop-b", "10.20.30.40"),
        ]
        # Back to https and then to clear again: warned again.
        assert await reload_warns("https://api.example.test/x", {"shop-a": KEY_A2}) == []
        assert await reload_warns(other, {"shop-a": KEY_A2}) == [("shop-a", "10.20.30.40")]
    finally:
        await daemon.stop()
