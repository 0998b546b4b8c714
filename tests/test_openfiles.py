"""The open-files limit: the daemon raises its soft limit to the hard one at start, logs both,
and warns when what is left is too little. Run as a process under ``prlimit``, as systemd or a
container runtime would start it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from tooling import REPO, require_tool

EXE = [sys.executable, "-m", "exporter"]


def start_demo(soft: int, hard: int, *flags: str) -> str:
    """Run the demo under the given limits until it listens; its stderr up to then."""
    prlimit = require_tool("prlimit")
    args = [prlimit, f"--nofile={soft}:{hard}", *EXE, "--demo", "--log.level=debug"]
    proc = subprocess.Popen(
        [*args, "--web.listen-address=127.0.0.1:0", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:  # ends if the process dies; the test's timeout bounds the rest
            lines.append(line)
            if "msg=listening" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    return "".join(lines) + rest


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    err = start_demo(1024, 4096)
    assert 'msg="open-files limit" soft_at_start=1024 soft=4096 hard=4096' in err
    # The total cap is what the limit leaves beside polling and the reserve.
    assert "per_client=64 total=4028" in err  # 4096 - 64 reserved - the demo's 4 API connections
    assert "open-files limit is too low" not in err


def test_a_hard_limit_too_low_is_warned_about() -> None:
    err = start_demo(150, 150)
    assert 'msg="open-files limit" soft_at_start=150 soft=150 hard=150' in err
    assert "level=warn" in err and "the open-files limit is too low" in err
    assert "open_files_limit=150 api_connections=4 client_connections=128 reserved=64" in err


@pytest.mark.parametrize("flag", ["--web.max-connections=5000", "--web.max-connections=0"])
def test_an_explicit_total_cap_is_kept_and_checked(flag: str) -> None:
    err = start_demo(4096, 4096, flag)
    limit = flag.split("=")[1]
    assert f"total={limit if limit != '0' else 'unlimited'}" in err
    if limit == "5000":
        assert "the open-files limit is too low" in err
        assert "client_connections=5000" in err


def test_the_image_the_chart_and_the_unit_do_not_lower_the_limit() -> None:
    """The limit the runtime gives is the one the exporter raises to: nothing in between may
    lower it (a shell `ulimit -n`, a prlimit wrapper, a systemd LimitNOFILE below the default)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    entrypoint = [ln for ln in dockerfile.splitlines() if ln.startswith("ENTRYPOINT")]
    assert entrypoint == [
        'ENTRYPOINT ["retargeting-exporter", "--config.file=/etc/retargeting-exporter/config.yaml"]'
    ]  # exec form: the exporter is PID 1's program, no shell in between
    chart = [*(REPO / "helm").rglob("*.yaml"), *(REPO / "helm").rglob("*.tpl")]
    assert chart
    for path in [REPO / "Dockerfile", *chart]:
        text = path.read_text().lower()
        for word in ("ulimit", "nofile", "prlimit", "rlimit"):
            assert word not in text, f"{path.relative_to(REPO)} mentions {word}"
    units = list((REPO / "deploy").rglob("*.service"))
    assert units
    for unit in units:
        for line in unit.read_text().splitlines():
            if line.startswith("LimitNOFILE="):
                hard = line.split("=", 1)[1].split(":")[-1]
                assert hard == "infinity" or int(hard) >= 524288, f"{unit}: {line}"
