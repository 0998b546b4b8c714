"""Shutdown (issue 5): SIGTERM and SIGINT stop the daemon at once, even with API requests hanging.

The exporter runs as users run it (a subprocess with a config file) against the fake API, which
never answers. Once every request hangs, a signal must end the process with exit code 0, after
closing its connections to the API; nothing is left hanging at the fake. The requests' timeout
is ten minutes: a daemon that waited for them would not end within the test's guard. (How the
poller's own waits end on ``stop`` is tested on a fake clock in test_poller.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest
import yaml
from test_faults import wait_for
from test_secrets import Daemon

from exporter.fakeapi import FakeAccount, FakeApi, Fault

ACCOUNTS = 3
WINDOWS = ["24h", "30d"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_the_daemon_quickly_while_requests_hang(
    sig: signal.Signals, tmp_path: Path
) -> None:
    keys = [f"shutdown-key-{i}" for i in range(ACCOUNTS)]
    async with FakeApi([FakeAccount(k, seed=i) for i, k in enumerate(keys)]) as fake:
        fake.set_fault(Fault.HANG)  # every request, until the client gives up: here, never
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "api": {"url": fake.url, "timeout": "10m"},
                    "windows": WINDOWS,
                    "accounts": [
                        {"name": f"shop-{i}", "rest_key_env": f"SHUTDOWN_KEY_{i}"}
                        for i in range(ACCOUNTS)
                    ],
                }
            )
        )
        env = {f"SHUTDOWN_KEY_{i}": k for i, k in enumerate(keys)}
        daemon = await Daemon.start([f"--config.file={config}"], env)
        try:
            hanging = ACCOUNTS * len(WINDOWS)
            await daemon.wait_for(lambda: fake.in_flight == hanging, "every request hanging")
            async with (  # the daemon itself still answers
                aiohttp.ClientSession() as http,
                http.get(daemon.base_url + "/-/healthy") as response,
            ):
                assert response.status == 200
            # A guard, far below the requests' timeout (and aiohttp's 60 s drain of connections).
            code = await daemon.stop(sig, timeout=30)
        finally:
            await daemon.kill()
        # The API client was closed: the fake sees no request still open.
        await wait_for(lambda: fake.in_flight == 0, 10.0, "the daemon's requests closed")
    stderr = "".join(daemon.stderr)
    assert code == 0, stderr
    assert daemon.count("shutting down") == 1
    assert "Traceback" not in stderr and "Task was destroyed" not in stderr, stderr
    assert all(fake_request.status == 0 for fake_request in fake.requests)  # none was answered
