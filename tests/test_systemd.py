"""deploy/systemd/retargeting-exporter.service: valid, hardened, and it runs the exporter.

systemd's own analyser checks the unit (`verify`, `security --offline`). Then the unit's
ExecStart command line runs, its specifiers and variables expanded and its credentials laid out
as systemd does (one file per LoadCredential=, named as the unit names them, in
$CREDENTIALS_DIRECTORY), against the fake API; its ExecReload reloads it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tooling import REPO, free_port, require_tool

from exporter.fakeapi import FakeAccount, FakeApi

UNIT = REPO / "deploy" / "systemd" / "retargeting-exporter.service"
EXAMPLE = REPO / "deploy" / "systemd" / "config.example.yml"
INSTALLED = "/opt/retargeting-exporter/bin/retargeting-exporter"  # where the README installs it
ENTRY_POINT = Path(sys.executable).parent / "retargeting-exporter"  # this venv's console script
MAX_EXPOSURE = 2.0
DEFAULT_HARD_NOFILE = 524288  # systemd's default hard limit: never lower it


def service_settings() -> dict[str, list[str]]:
    """The [Service] section: every value of each key, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def unit_here(tmp_path: Path) -> Path:
    """The unit with one change: the executable is this venv's, as /opt/... is not installed
    on the test machine (`verify` checks that ExecStart's program exists)."""
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(ENTRY_POINT)))
    return copy


def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", str(unit_here(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_exposure_is_at_most_two() -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_no_root_no_key_in_the_unit_reload_by_sighup() -> None:
    settings = service_settings()
    assert settings["DynamicUser"] == ["yes"]
    assert "User" not in settings
    # Keys come as credentials; the environment only ever carries flags.
    assert "Environment" not in settings
    assert settings["LoadCredential"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for limit in settings.get("LimitNOFILE", []):
        assert int(limit.split(":")[-1]) >= DEFAULT_HARD_NOFILE


def exec_start(config_dir: Path, args: str) -> list[str]:
    """ExecStart as systemd expands it: specifiers, then `$VAR` words split on whitespace."""
    [line] = service_settings()["ExecStart"]
    specifiers = {"E": str(config_dir.parent), "%": "%"}  # %E: /etc for a system unit

    def specifier(match: re.Match[str]) -> str:
        assert match.group(1) in specifiers, f"specifier %{match.group(1)} not laid out here"
        return specifiers[match.group(1)]

    argv: list[str] = []
    for word in shlex.split(line):
        word = re.sub(r"%(.)", specifier, word)
        if word == "$ARGS":
            argv.extend(args.split())
        else:
            assert "$" not in word, f"variable in {word!r} not laid out here"
            argv.append(word)
    assert argv[0] == INSTALLED
    return [str(ENTRY_POINT), *argv[1:]]


def sandbox() -> Callable[[], None]:
    """The parts of the unit's sandbox a process can impose on itself, to run in the child
    before exec: NoNewPrivileges= and MemoryDenyWriteExecute= (the prctl that systemd's seccomp
    filter mirrors; Linux 6.3 and later, silently absent before)."""
    settings = service_settings()
    options = []
    if settings.get("NoNewPrivileges") == ["yes"]:
        options.append(38)  # PR_SET_NO_NEW_PRIVS
    if settings.get("MemoryDenyWriteExecute") == ["yes"]:
        options.append(65)  # PR_SET_MDWE, with PR_MDWE_REFUSE_EXEC_GAIN
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def apply() -> None:  # after fork: no allocation worth the name, no locks
        for option in options:
            prctl(option, 1, 0, 0, 0)

    return apply


def load_credentials(credentials: Path, keys_dir: Path) -> None:
    """What LoadCredential=ID:DIRECTORY does: each file becomes ID_<file>, read-only."""
    [spec] = service_settings()["LoadCredential"]
    cred_id, source = spec.split(":", 1)
    assert source == "/etc/retargeting-exporter/keys"
    credentials.mkdir(mode=0o500)
    for key_file in keys_dir.iterdir():
        target = credentials / f"{cred_id}_{key_file.name}"
        target.write_bytes(key_file.read_bytes())
        target.chmod(0o400)


@pytest.fixture
async def keys() -> AsyncIterator[tuple[dict[str, str], FakeApi]]:
    names = [a["name"] for a in yaml.safe_load(EXAMPLE.read_text())["accounts"]]
    by_name = {name: f"systemd-{name}-{i}e4f1" for i, name in enumerate(names)}
    fake = FakeApi([FakeAccount(key, seed=i) for i, key in enumerate(by_name.values())])
    await fake.start()
    try:
        yield by_name, fake
    finally:
        await fake.close()


async def scrape(url: str) -> dict[str, float]:
    """`name{account}` -> the sum of its samples (over sources, windows) per account."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "account" in sample.labels:
                name = f"{sample.name}{{{sample.labels['account']}}}"
                sums[name] = sums.get(name, 0.0) + sample.value
    return sums


async def test_the_units_command_line_serves_figures_from_its_credentials(
    tmp_path: Path, keys: tuple[dict[str, str], FakeApi]
) -> None:
    by_name, fake = keys
    etc = tmp_path / "etc"
    config_dir = etc / "retargeting-exporter"
    (config_dir / "keys").mkdir(parents=True)
    for name, key in by_name.items():
        (config_dir / "keys" / name).write_text(key + "\n")
    config = yaml.safe_load(EXAMPLE.read_text())
    config["api"] = {"url": fake.url}  # the one change: the fake instead of the vendor
    (config_dir / "config.yml").write_text(yaml.safe_dump(config))
    credentials = tmp_path / "run" / "credentials" / "retargeting-exporter.service"
    credentials.parent.mkdir(parents=True)
    load_credentials(credentials, config_dir / "keys")
    port = free_port()
    argv = exec_start(config_dir, f"--web.listen-address=127.0.0.1:{port} --log.format=json")
    env = {"PATH": os.environ["PATH"], "CREDENTIALS_DIRECTORY": str(credentials)}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stderr=asyncio.subprocess.PIPE, cwd="/", preexec_fn=sandbox()
    )
    log: list[str] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            log.append(line.decode())

    reader = asyncio.create_task(read())

    async def wait_for(text: str) -> None:
        for _ in range(600):
            if any(text in line for line in log) or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert any(text in line for line in log), "".join(log)

    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(600):
            if proc.returncode is not None:
                break
            try:
                metrics = await scrape(url)
            except aiohttp.ClientConnectionError:
                metrics = {}
            if all(metrics.get(f"retargeting_up{{{n}}}") == 1 for n in by_name):
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, "".join(log)
        for name in by_name:
            assert metrics[f"retargeting_up{{{name}}}"] == 1
            assert metrics[f"retargeting_impressions{{{name}}}"] > 0
        # ExecReload, as systemd runs it: $MAINPID is the exporter.
        [reload] = service_settings()["ExecReload"]
        command = shlex.split(reload.replace("$MAINPID", str(proc.pid)))
        subprocess.run(command, check=True, timeout=30)
        await wait_for("configuration reloaded")
        assert proc.returncode is None
        text = "".join(log)
        for key in by_name.values():
            assert key not in text
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await reader
    assert proc.returncode == 0, "".join(log)
