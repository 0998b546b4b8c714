"""No rest key ever leaves the exporter (issue 5).

Every account has a distinctive key (``SECRETZQ7-…``, with characters that a URL percent-encodes
and JSON may escape, so any spelling of it still contains the needle). The tests drive every fault
of the fake vendor, ``--once``, ``--config.check``, the status page, ``/metrics``, reloads by
``POST /-/reload`` and by SIGHUP, every log level and both log formats, and search everything that
comes out: stdout, stderr, HTTP bodies, every log record (before any redaction by the log
formatter), and every exception with its chain and its frames' local variables.

Also: a literal ``rest_key`` in a config file that other users can read triggers a warning.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import signal
import ssl
import stat
import sys
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient
from conftest import Clients
from rawhttp import Answer, RawServer, response
from test_faults import CASES
from test_webconfig import Pki
from tinyproxy import Tinyproxy
from tooling import free_port

from exporter.client import TrafficSourceClient
from exporter.config import Config, RestKey, load_config, parse_config
from exporter.errors import ApiError, ApiErrorReason
from exporter.fakeapi import AccountState, FakeAccount, FakeApi
from exporter.logs import JsonFormatter, LogfmtFormatter, Redactor
from exporter.metrics import AccountsExposition, render_all
from exporter.poller import Poller
from exporter.selfmetrics import SelfMetrics
from exporter.store import SnapshotStore
from exporter.web import Runtime, make_app

Client = TestClient  # type: ignore[type-arg]
REPO = Path(__file__).resolve().parent.parent
NEEDLE = "SECRETZQ7"
_serial = itertools.count()


def new_key() -> str:
    """A key that contains the needle in any encoding (+, / and = are escaped in URLs)."""
    return f"{NEEDLE}-{next(_serial):03d}-k+y/="


def assert_clean(text: str, where: str) -> None:
    assert NEEDLE not in text, f"a rest key leaked into {where}: ...{_around(text)}..."


def _around(text: str) -> str:
    i = text.index(NEEDLE)
    return text[max(0, i - 120) : i + 40]


@dataclass
class Shop:
    """The accounts of the test: one per fault, plus healthy, inactive and unknown keys."""

    fake: FakeApi
    keys: dict[str, str] = field(default_factory=dict)  # account name -> key

    @classmethod
    async def start(cls) -> Shop:
        shop = cls(FakeApi([]))
        for case in CASES:
            shop.serve(case.id)
            shop.fake.set_fault(case.fault, key=shop.keys[case.id], **case.params)
        shop.serve("healthy")
        shop.serve("inactive", AccountState.INACTIVE)
        shop.keys["unknown"] = new_key()  # never served: "Incorrect rest key!"
        await shop.fake.start()
        return shop

    def serve(self, name: str, state: AccountState = AccountState.PAID) -> None:
        self.keys[name] = new_key()
        self.fake.add_account(FakeAccount(self.keys[name], state, seed=len(self.keys)))

    def env(self) -> dict[str, str]:
        return {env_name(name): key for name, key in self.keys.items()}


def env_name(account: str) -> str:
    return "RK_" + re.sub(r"\W", "_", account).upper()


def config_data(shop: Shop, key_file: Path, literal: str) -> dict[str, Any]:
    """Every kind of key source: env for most accounts, a literal and a key file for two."""
    accounts: list[dict[str, Any]] = [
        {"name": name, "rest_key_env": env_name(name)} for name in shop.keys
    ]
    accounts.append({"name": "literal", "rest_key": literal})
    accounts.append({"name": "from-file", "rest_key_file": str(key_file)})
    return {
        "api": {
            "url": shop.fake.url,
            "timeout": "300ms",
            "retries": {"attempts": 2, "initial_backoff": "10ms", "max_backoff": "20ms"},
        },
        "polling": {"interval": "30s"},
        "windows": ["24h", "30d"],
        "accounts": accounts,
    }


def exception_texts(error: BaseException) -> Iterable[str]:
    """Everything an exception can show: texts, the chain, tracebacks with frame locals."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(getattr(current, "args", ()))
        yield "".join(traceback.format_exception(current))
        yield "".join(
            traceback.TracebackException.from_exception(current, capture_locals=True).format()
        )
        current = current.__cause__ or current.__context__


async def failure_of(request: Awaitable[Any]) -> ApiError | None:
    """The ``ApiError`` a request raises, caught in a frame whose locals hold nothing else:
    tracebacks are rendered with their frames' locals, up to the frame that caught them."""
    try:
        await request
    except ApiError as error:
        return error
    return None


def record_texts(record: logging.LogRecord) -> Iterable[str]:
    """A log record as both formatters write it, with no redaction to hide a leak."""
    yield record.getMessage()
    yield repr(record.__dict__)
    for formatter in (LogfmtFormatter(Redactor()), JsonFormatter(Redactor())):
        yield formatter.format(record)
    if record.exc_info and record.exc_info[1] is not None:
        yield from exception_texts(record.exc_info[1])


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- in process: every record, every exception, every page -------------------------------------


async def _no_reload() -> tuple[bool, str]:
    return True, "configuration reloaded"


async def test_no_key_in_records_exceptions_pages_or_metrics(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    aiohttp_client: Callable[[Any], Awaitable[Client]],
    clients: Clients,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    shop = await Shop.start()
    literal, from_file = new_key(), new_key()
    for key in (literal, from_file):
        shop.fake.add_account(FakeAccount(key, seed=99))
    key_file = tmp_path / "key"
    key_file.write_text(from_file + "\n")
    texts: list[tuple[str, str]] = []

    def parsed(data: dict[str, Any]) -> Config:
        config = parse_config(data, env=shop.env(), base_dir=tmp_path)
        accounts = tuple(replace(a, interval=1.0, stale_after=3.0) for a in config.accounts)
        return replace(config, accounts=accounts)

    config = parsed(config_data(shop, key_file, literal))
    texts.append(("config repr", repr(config)))
    try:
        client = clients.new(shop.fake.url, timeout=0.3)
        # 1. Every failure straight from the client, with everything the exception carries.
        for account in config.accounts:
            request = client.fetch(account.rest_key, 1_700_000_000, 1_700_086_400)
            error = await failure_of(request)
            if error is not None:
                where = f"exception of {account.name}"
                texts.extend((where, t) for t in exception_texts(error))

        # 2. The daemon's parts: poll loops, pages, metrics, reload with rotated keys.
        store = SnapshotStore()
        poller = Poller(config, client, store)
        rotated: list[str] = []

        async def reload() -> tuple[bool, str]:
            nonlocal literal
            literal = new_key()
            shop.fake.add_account(FakeAccount(literal, seed=98))
            rotated.append(literal)
            poller.apply(parsed(config_data(shop, key_file, literal)))
            return True, "configuration reloaded"

        runtime = Runtime(
            store=store,
            poller=poller,
            exposition=AccountsExposition(),
            self_metrics=poller.self_metrics,
            reload=reload,
        )
        http = await aiohttp_client(make_app(runtime))
        poller.start()
        try:
            await wait_for(poller.ready, 5.0, "every account polled")
            for method, path in [
                ("GET", "/"),
                ("GET", "/metrics"),
                ("GET", "/-/healthy"),
                ("GET", "/-/ready"),
                ("POST", "/-/reload"),
            ]:
                response = await http.request(method, path)
                texts.append((f"{method} {path}", await response.text()))
            await wait_for(lambda: shop.fake.count(rotated[0]) > 0, 5.0, "the rotated key")
            texts.append(("GET / after reload", await (await http.get("/")).text()))
            texts.append(("metrics after reload", await (await http.get("/metrics")).text()))
        finally:
            await poller.stop()
        for snapshot in store.snapshots():
            texts.append((f"snapshot {snapshot.name}", repr(snapshot)))
    finally:
        await shop.fake.close()

    for record in caplog.records:
        texts.extend((f"log record {record.name}: {record.msg}", t) for t in record_texts(record))
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # debug really was on
    failing = {w for w, _ in texts if w.startswith("exception of ")}
    assert len(failing) == sum(c.reason is not None for c in CASES) + 2  # + inactive, unknown
    for where, text in texts:
        assert_clean(text, where)


async def test_a_vendor_echoing_the_key_does_not_leak_it(
    caplog: pytest.LogCaptureFixture, clients: Clients
) -> None:
    """Error texts quote the vendor; if the vendor quotes the key, the key is cut out."""
    caplog.set_level(logging.DEBUG)
    key = new_key()
    bodies = [
        {"status": "error", "message": f"Incorrect rest key! ({key})"},
        {"status": "error", "message": f"Something went wrong for {json.dumps(key)}"},
        {"status": "fail", "data": {"validator": {"rest_key": [f"{key} is invalid"]}}},
        {"status": "success", "data": [{"source_name": key}]},
        {"status": "error", "message": "x" * 190 + key},  # the key cut by the length cap
    ]
    for body in bodies:
        async with RawServer(response(body)) as server:
            client = clients.new(server.url)
            error = await failure_of(client.fetch(RestKey(key), 1, 2))
        assert error is not None and error.reason in set(ApiErrorReason)
        for text in exception_texts(error):
            assert_clean(text, f"the error for {body}")
            assert "-k+y/=" not in text and "k%2By" not in text


# -- the command line as users run it --------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str


async def run_cli(args: list[str], env: dict[str, str], timeout: float = 30.0) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        env={**os.environ, **env},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Run(args, process.returncode, stdout.decode(), stderr.decode())


class Daemon:
    """The exporter started as users start it, its output collected while it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            asyncio.create_task(self._read(process.stdout, self.stdout)),
            asyncio.create_task(self._read(process.stderr, self.stderr)),
        ]
        self.base_url = ""

    @classmethod
    async def start(cls, args: list[str], env: dict[str, str], cwd: Path = REPO) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "--web.listen-address=127.0.0.1:0",
            *args,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        daemon = cls(process)
        await daemon.wait_for(lambda: daemon.address() is not None, "the listening log line")
        daemon.base_url = f"http://{daemon.address()}"
        return daemon

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
        assert stream is not None
        async for line in stream:
            lines.append(line.decode("utf-8", "replace"))

    def address(self) -> str | None:
        for line in self.stderr:
            if "listening" in line:
                match = re.search(r'address["=:\s]+"?(127\.0\.0\.1:\d+)', line)
                if match:
                    return match.group(1)
        return None

    def count(self, text: str) -> int:
        return sum(text in line for line in self.stderr)

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.returncode is not None or time.monotonic() > deadline:
                output = "".join(self.stderr[-20:])
                raise AssertionError(f"waiting for {what}; daemon output:\n{output}")
            await asyncio.sleep(0.02)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    shop = await Shop.start()
    yield shop
    await shop.fake.close()


def write_config(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(mode)


async def test_no_key_in_cli_output_at_any_level_or_format(shop: Shop, tmp_path: Path) -> None:
    literal, from_file = new_key(), new_key()
    for key in (literal, from_file):
        shop.fake.add_account(FakeAccount(key, seed=7))
    key_file = tmp_path / "key"
    key_file.write_text(from_file + "\n")
    key_file.chmod(0o600)
    config_file = tmp_path / "config.yaml"
    data = config_data(shop, key_file, literal)
    write_config(config_file, data)  # world-readable with a literal key: warned about
    broken = tmp_path / "broken.yaml"
    # Refused for three reasons, one a proxy URL whose password must not be quoted back.
    password = urllib.parse.quote(new_key(), safe="")
    api = {**data["api"], "proxy_url": f"https://user:{password}@proxy.example:3128"}
    write_config(broken, {**data, "api": api, "polling": {"interval": "1s"}, "bogus": True})
    env = shop.env()
    outputs: list[tuple[str, str]] = []

    # --config.check and --once at every level, in both formats (a few at a time).
    limit = asyncio.Semaphore(4)

    async def run(args: list[str]) -> Run:
        async with limit:
            return await run_cli(args, env)

    runs = [
        [f"--config.file={file}", "--config.check", f"--log.level={level}", f"--log.format={fmt}"]
        for file in (config_file, broken)
        for level, fmt in (("debug", "logfmt"), ("debug", "json"))
    ] + [
        [f"--config.file={config_file}", "--once", f"--log.level={level}", f"--log.format={fmt}"]
        for level in ("debug", "info", "warn", "error")
        for fmt in ("logfmt", "json")
    ]
    results = await asyncio.gather(*(run(args) for args in runs))
    for result in results:
        outputs += [(f"stdout of {result.args}", result.stdout)]
        outputs += [(f"stderr of {result.args}", result.stderr)]
        if "--config.check" in result.args:
            assert result.code == (0 if str(config_file) in result.args[0] else 2), result
        else:
            assert result.code == 1, result  # some accounts fail
            assert "retargeting_up" in result.stdout
    checked = next(r for r in results if "--config.check" in r.args and r.code == 0)
    assert "readable by other users" in checked.stdout
    debug_once = next(r for r in results if "--once" in r.args and "--log.level=debug" in r.args)
    assert "level=debug" in debug_once.stderr or '"level": "debug"' in debug_once.stderr

    # The daemon, at debug level in both formats: pages, metrics, reloads (HTTP and SIGHUP).
    for fmt in ("logfmt", "json"):
        outputs += await exercise_daemon(shop, fmt, config_file, broken, key_file, data, env)

    for where, text in outputs:
        assert_clean(text, where)


async def exercise_daemon(
    shop: Shop,
    fmt: str,
    config_file: Path,
    broken: Path,
    key_file: Path,
    data: dict[str, Any],
    env: dict[str, str],
) -> list[tuple[str, str]]:
    """Start the daemon, use every endpoint, reload three ways, stop it; return all it said."""
    outputs: list[tuple[str, str]] = []
    daemon = await Daemon.start(
        [f"--config.file={config_file}", "--log.level=debug", f"--log.format={fmt}"], env
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str, method: str = "GET") -> str:
                async with http.request(method, daemon.base_url + path) as response:
                    text = await response.text()
                    outputs.append((f"{method} {path} ({fmt})", text))
                    return text

            async def ready() -> bool:
                async with http.get(daemon.base_url + "/-/ready") as response:
                    return response.status == 200

            deadline = time.monotonic() + 15
            while not await ready():
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.1)
            for path in ("/", "/metrics", "/-/healthy", "/-/ready"):
                await get(path)
            # Rotate the literal and the file key, reload over HTTP, then by SIGHUP.
            rotated = new_key()
            shop.fake.add_account(FakeAccount(rotated, seed=8))
            write_config(config_file, config_data(shop, key_file, rotated))
            key_file.write_text(new_key() + "\n")
            assert "configuration reloaded" in await get("/-/reload", "POST")
            daemon.process.send_signal(signal.SIGHUP)
            await daemon.wait_for(
                lambda: daemon.count("configuration reloaded") >= 2, "the SIGHUP reload"
            )
            # An invalid config is refused, with its reasons.
            config_file.write_bytes(broken.read_bytes())
            assert "bogus" in await get("/-/reload", "POST")
            write_config(config_file, data)
            for path in ("/", "/metrics"):
                await get(path)
        assert await daemon.stop() == 0
    finally:
        await daemon.kill()
    outputs.append((f"daemon stdout ({fmt})", "".join(daemon.stdout)))
    outputs.append((f"daemon stderr ({fmt})", "".join(daemon.stderr)))
    assert daemon.count("reload failed") == 1
    assert any("level=debug" in line or '"level": "debug"' in line for line in daemon.stderr)
    return outputs


# -- the warning about a literal key in a readable file ----------------------------------------


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o644, True), (0o640, True), (0o604, True), (0o600, False), (0o400, False)],
)
def test_literal_key_in_a_readable_file_is_warned_about(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    key = new_key()
    path = tmp_path / "config.yaml"
    data = {"accounts": [{"name": "shop", "rest_key": key}, {"name": "env", "rest_key_env": "X"}]}
    write_config(path, data, mode)
    config = load_config(path, env={"X": new_key()})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    if warned:
        (warning,) = config.warnings
        assert f"mode {mode:o}" in warning and "account(s) shop:" in warning
        assert "chmod 600" in warning
        assert_clean(warning, "the warning")
    else:
        assert config.warnings == ()


def test_keys_from_env_or_file_are_never_warned_about(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(new_key())
    path = tmp_path / "config.yaml"
    data = {
        "accounts": [
            {"name": "a", "rest_key_env": "X"},
            {"name": "b", "rest_key_file": str(key_file)},
        ]
    }
    write_config(path, data, 0o644)
    assert load_config(path, env={"X": new_key()}).warnings == ()


async def test_the_warning_is_logged_at_start_up(tmp_path: Path) -> None:
    """Logged by the daemon (and --once) at start-up; shown by --config.check; never the key."""
    async with FakeApi([]) as fake:
        key = new_key()
        path = tmp_path / "config.yaml"
        data = {
            "api": {"url": fake.url, "retries": {"attempts": 1}},
            "accounts": [{"name": "shop", "rest_key": key}],
        }
        write_config(path, data, 0o644)
        once = await run_cli([f"--config.file={path}", "--once"], {})
        assert once.code == 1  # the fake does not know the key
        warnings = [line for line in once.stderr.splitlines() if "level=warn" in line]
        assert any("readable by other users" in line for line in warnings), once.stderr
        path.chmod(0o600)
        quiet = await run_cli([f"--config.file={path}", "--once"], {})
        assert "readable by other users" not in quiet.stderr
        for run in (once, quiet):
            assert_clean(run.stdout + run.stderr, f"output of {run.args}")


# -- every transport failure, through a real proxy too -------------------------------------------


@pytest.mark.e2e
async def test_no_secret_in_any_transport_failure_at_debug_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's exceptions embed the URL (and so the key) and the proxy URL (and so its
    password): for every way a request can fail below HTTP, nothing the exporter logs (debug
    level, both formats, before redaction), raises or exports holds either."""
    caplog.set_level(logging.DEBUG)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    key, password = new_key(), f"{NEEDLE}-proxy-pa55"
    pki = Pki(tmp_path)
    issued = pki.issue("localhost")
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted.load_cert_chain(issued.cert, issued.key)
    success = (REPO / "tests" / "fixtures" / "traffic-source-success.json").read_bytes()
    texts: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    async with (
        Tinyproxy(tmp_path, user="exporter", password=password) as proxy,
        RawServer(response(success), tls=untrusted) as tls,
        RawServer(Answer(response(success), delay=30)) as hung,
        RawServer(Answer(response(success)[:-40], close=True)) as reset,
        RawServer(response({"status": "success", "data": [], "pad": "x" * (2 << 20)})) as big,
    ):
        dead = f"http://127.0.0.1:{free_port()}/v1/partners-api/traffic-source"
        kinds: dict[str, tuple[str, str | None, str]] = {
            "refused": (dead, None, "cannot connect: Connection refused"),
            "dns": ("http://api.example.invalid/traffic-source", None, "cannot resolve: "),
            "tls": (tls.url, None, "TLS certificate verification failed: "),
            "timeout": (hung.url, None, "no complete answer within the timeout"),
            "reset": (reset.url, None, "the connection broke while reading the body"),
            "over-cap": (big.url, None, "body of 2097"),
            "proxy-refused": (
                big.url,
                f"http://exporter:{password}@127.0.0.1:{free_port()}",
                "cannot connect to the proxy 127.0.0.1:",
            ),
            "proxy-auth": (
                big.url,
                proxy.url(f"exporter:wrong-{password}"),
                f"the proxy {proxy.address} refused the request: HTTP 401",
            ),
        }
        for kind, (url, proxy_url, message) in kinds.items():
            api: dict[str, Any] = {"url": url, "timeout": "500ms", "retries": {"attempts": 1}}
            if proxy_url is not None:
                api["proxy_url"] = proxy_url
            data = {"api": api, "accounts": [{"name": kind, "rest_key_env": "RK_TRANSPORT"}]}
            config = parse_config(data, env={"RK_TRANSPORT": key}, base_dir=tmp_path)
            texts.append((f"config ({kind})", repr(config)))
            client = TrafficSourceClient.for_api(config.api)  # as the daemon makes it
            try:
                error = await failure_of(client.fetch(RestKey(key), 1_700_000_000, 1_700_086_400))
                assert error is not None, kind
                texts.extend((f"exception ({kind})", t) for t in exception_texts(error))
                seen[kind] = error.message
                assert error.message.startswith(message), (kind, error.message)
                # The daemon's path: the poller logs the account going down, with its reason.
                store = SnapshotStore()
                (snapshot,) = await Poller(config, client, store).poll_all_once()
                assert not snapshot.up
                exposition = AccountsExposition()
                body = render_all(exposition, store, SelfMetrics(), time.time())
                texts.append((f"metrics ({kind})", body.decode()))
            finally:
                await client.close()
    assert set(seen) == set(kinds)
    records = [r for r in caplog.records if r.levelno >= logging.DEBUG]
    assert any(r.levelno == logging.DEBUG for r in records)
    for kind in kinds:  # every failure reached the log, in both formats
        assert any(kind in text for r in records for text in record_texts(r)), kind
    for record in records:
        texts.extend((f"log record {record.name}", t) for t in record_texts(record))
    for where, text in texts:
        assert_clean(text, where)
