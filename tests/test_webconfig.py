"""``--web.config.file``: TLS, basic auth and headers; file changes applied without a restart.

Layers: the parser's error table → the guard on a real TLS server in this process (every
accept/reject decision, certificate and user changes) → the daemon as a subprocess scraped by a
real Prometheus server over HTTPS with basic auth and a client certificate. Every certificate is
made here, by a throwaway CA that lives for one test.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tooling import free_ports, require_tool

from exporter.client import TrafficSourceClient
from exporter.config import parse_config
from exporter.metrics import AccountsExposition
from exporter.poller import Poller
from exporter.store import SnapshotStore
from exporter.web import Runtime, make_app
from exporter.webconfig import WebGuard, load_web_config, parse_web_config
from exporter.yamlcheck import ConfigError

EXE = [sys.executable, "-m", "exporter"]
USER, PASSWORD = "prometheus", "scrape-pass-6c1a"


def hashed(password: str) -> str:
    # Cost 4, the minimum: the tests check behaviour, not bcrypt's slowness.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


# -- a throwaway PKI ---------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    cert: Path
    key: Path
    serial: int


class Pki:
    """A CA in ``directory`` that issues server and client certificates as PEM files."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._builder(_name(name), self._key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        self._cert = self._cert.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
        )  # fmt: skip
        self.ca_cert = self._cert.sign(self._key, hashes.SHA256())
        self.ca_file = directory / f"{name}.crt"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name(self.name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
        )

    def issue(self, name: str, *, server: bool = True) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            self._builder(_name(name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.crt", self.directory / f"{name}.key", 0)
        replace_file(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
        replace_file(
            issued.key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        issued.serial = cert.serial_number
        return issued


def replace_file(path: Path, data: bytes) -> None:
    """Write as deployments should: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def write_web_config(path: Path, data: dict[str, Any]) -> Path:
    replace_file(path, yaml.safe_dump(data, sort_keys=False).encode())
    return path


def client_context(
    pki: Pki, client: Issued | None = None, *, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def stranger_dir(tmp_path: Path) -> Path:
    """A directory for a second, unrelated CA (same file names must not collide)."""
    path = tmp_path / "stranger"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


# -- parsing -----------------------------------------------------------------------------------


def test_an_empty_file_means_plain_http_without_authentication(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("")
    config = load_web_config(path)
    assert config.tls is None and not config.users and not config.headers
    assert config.describe() == "TLS off (plain HTTP); basic auth off; headers none"


def test_a_full_config_parses_with_paths_relative_to_the_file(pki: Pki, tmp_path: Path) -> None:
    server = pki.issue("server")
    client_ca = Pki(tmp_path, "client-ca")
    path = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key_file": "server.key",
                "client_ca_file": "client-ca.crt",
                "client_auth_type": "RequireAndVerifyClientCert",
                "min_version": "TLS13",
            },
            "http_server_config": {
                "http2": True,
                "headers": {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=60"},
            },
            "basic_auth_users": {USER: hashed(PASSWORD)},
        },
    )
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == server.cert and config.tls.client_ca_file == client_ca.ca_file
    assert config.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert set(config.users) == {USER}
    assert config.describe() == (
        "TLS on (min_version TLS13, client_auth_type RequireAndVerifyClientCert); "
        "basic auth 1 user(s); headers X-Frame-Options, Strict-Transport-Security"
    )


def test_the_documented_example_is_valid() -> None:
    """docs/web-config.md's example parses, and its hash is what the comment says."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "web-config.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_web_config(yaml.safe_load(example), source="web.yml", base_dir=Path("/etc"))
    assert config.tls is not None and config.tls.cert_file == Path("/etc/tls/server.crt")
    assert config.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert len(config.headers) == 4
    assert bcrypt.checkpw(b"change-me", config.users["prometheus"])


GOOD_HASH = "$2b$04$9GNUaPdgKJv0EZDnccR5aOn2dgj6I7BhR7CprLM5LimOuFwzF99DG"


@pytest.mark.parametrize(
    ("data", "problems"),
    [
        ([], ["(top level): must be a mapping, got a list"]),
        ({"basic_auth_user": {}},
         ["basic_auth_user: unknown key (did you mean 'basic_auth_users'?)"]),
        ({"rate_limit": {"burst": 1}}, ["rate_limit: is not supported by retargeting-exporter"]),
        (
            {"auth_excluded_paths": ["/metrics"]},
            ["auth_excluded_paths: is not supported by retargeting-exporter (/-/healthy and "
             "/-/ready never ask for credentials; every other path does)"],
        ),
        (
            {"basic_auth_users": {"alice": "plain-text-password"}},
            ["basic_auth_users.alice: must be a bcrypt hash ($2b$/$2y$..., 60 characters)"],
        ),
        (
            {"basic_auth_users": {"a:b": GOOD_HASH, "bob": GOOD_HASH[:-1]}},
            ["basic_auth_users.a:b: user names must be non-empty strings without ':'",
             "basic_auth_users.bob: must be a bcrypt hash"],
        ),
        ({"basic_auth_users": ["alice"]}, ["basic_auth_users: must map user names to bcrypt"]),
        (
            {"http_server_config": {"headers": {"X-Powered-By": "me", "X-Frame-Options": "allow"}}},
            ["http_server_config.headers.X-Powered-By: cannot be configured; allowed: "
             "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, "
             "X-XSS-Protection, Content-Security-Policy",
             "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin, "
             "got 'allow'"],
        ),
        (
            {"http_server_config": {"http2": "yes", "headers": {"X-XSS-Protection": "1\r\nX: y"}}},
            ["http_server_config.http2: must be true or false",
             "http_server_config.headers.X-XSS-Protection: must be a non-empty one-line string"],
        ),
        (
            {"tls_server_config": {"key_file": "k.pem"}},
            ["tls_server_config.cert_file: is required to serve TLS"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k", "cipher_suites": ["x"]}},
            ["tls_server_config.cipher_suites: is not supported by retargeting-exporter"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k", "client_auth_type": "Any"}},
            ["tls_server_config.client_auth_type: 'Any' is not one of NoClientCert, "
             "RequestClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k",
                                   "client_auth_type": "RequireAnyClientCert"}},
            ["tls_server_config.client_auth_type: RequireAnyClientCert (demand a certificate, "
             "never check it) cannot be offered"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k",
                                   "client_auth_type": "VerifyClientCertIfGiven"}},
            ["tls_server_config.client_ca_file: is required with VerifyClientCertIfGiven"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k", "client_ca_file": "ca"}},
            ["tls_server_config.client_ca_file: is set but client_auth_type NoClientCert never "
             "checks client certificates"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k", "min_version": "TLS11",
                                   "max_version": "TLS14"}},
            ["tls_server_config.min_version: 'TLS11' is no longer safe: use TLS12 or TLS13",
             "tls_server_config.max_version: 'TLS14' is not a TLS version"],
        ),
        (
            {"tls_server_config": {"cert_file": "c", "key_file": "k", "min_version": "TLS13",
                                   "max_version": "TLS12"}},
            ["tls_server_config.max_version: must not be below min_version"],
        ),
    ],
)  # fmt: skip
def test_invalid_web_configs_name_every_problem(data: Any, problems: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_web_config(data, source="web.yml", base_dir=Path("/etc"))
    assert len(caught.value.problems) == len(problems), caught.value.problems
    for got, expected in zip(caught.value.problems, problems, strict=True):
        assert got.startswith(expected), got
    assert "plain-text-password" not in str(caught.value)


def test_tls_files_that_cannot_be_used_are_named(pki: Pki, tmp_path: Path) -> None:
    server = pki.issue("server")
    other = pki.issue("other")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(server.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )

    def problems(tls: dict[str, str]) -> list[str]:
        path = write_web_config(tmp_path / "web.yml", {"tls_server_config": tls})
        with pytest.raises(ConfigError) as caught:
            load_web_config(path)
        return caught.value.problems

    assert problems({"cert_file": "nope.crt", "key_file": "server.key"}) == [
        f"tls_server_config.cert_file: cannot read {tmp_path / 'nope.crt'}: "
        "No such file or directory"
    ]
    assert problems({"cert_file": "server.key", "key_file": "server.crt"}) == [
        f"tls_server_config.cert_file: {server.key} holds no PEM certificate",
        f"tls_server_config.key_file: {server.cert} holds no PEM private key",
    ]
    assert problems({"cert_file": "server.crt", "key_file": "other.key"}) == [
        f"tls_server_config.key_file: cannot use {other.key} with {server.cert}: "
        "the key does not belong to the certificate"
    ]
    assert problems({"cert_file": "server.crt", "key_file": "encrypted.key"}) == [
        f"tls_server_config.key_file: {encrypted} is protected by a passphrase; give an "
        "unencrypted key and protect the file instead (mode 600)"
    ]
    (tmp_path / "empty-ca.crt").write_text("")
    assert problems(
        {
            "cert_file": "server.crt",
            "key_file": "server.key",
            "client_ca_file": "empty-ca.crt",
            "client_auth_type": "RequireAndVerifyClientCert",
        }
    ) == [f"tls_server_config.client_ca_file: {tmp_path / 'empty-ca.crt'} holds no PEM certificate"]


# -- the guard on a real server, in this process ------------------------------------------------


@dataclass
class Served:
    guard: WebGuard
    port: int
    reloads: list[str]

    def url(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


ServeFn = Callable[[Path], Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Serve the exporter's app with a web config, the file checked every 50 ms."""
    runners: list[web.AppRunner] = []
    config = parse_config(
        {"api": {"url": "http://127.0.0.1:9/"}, "accounts": [{"name": "a", "rest_key": "k-1"}]}
    )
    clients: list[TrafficSourceClient] = []

    async def start(path: Path) -> Served:
        guard = WebGuard(load_web_config(path), check_interval=0.05)
        reloads: list[str] = []

        async def reload() -> tuple[bool, str]:
            reloads.append("called")
            return True, "configuration reloaded"

        client = TrafficSourceClient(config.api.url, timeout=1, user_agent="t")
        clients.append(client)
        poller = Poller(config, client, SnapshotStore())
        runtime = Runtime(
            store=SnapshotStore(),
            poller=poller,
            exposition=AccountsExposition(),
            self_metrics=poller.self_metrics,
            reload=reload,
            guard=guard,
        )
        runner = web.AppRunner(make_app(runtime), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=guard.ssl_context)
        await site.start()
        return Served(guard, int(runner.addresses[0][1]), reloads)

    yield start
    for runner in runners:
        await runner.cleanup()
    for client in clients:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request: TLS decisions are made per connection.
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


def tls_auth_config(pki: Pki, tmp_path: Path, **tls: str) -> Path:
    server = pki.issue("server")
    return write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": str(server.cert),
                "key_file": str(server.key),
                **tls,
            },
            "http_server_config": {
                "headers": {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}
            },
            "basic_auth_users": {USER: hashed(PASSWORD), "other": hashed("other-pass")},
        },
    )


async def status(
    http: aiohttp.ClientSession,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = dict(headers or {})
    if auth is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
    async with http.request(method, url, ssl=ssl_context or False, headers=headers) as response:
        await response.read()
        return response.status, response.headers


async def test_basic_auth_decides_every_path_but_the_probes(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    served = await serve(tls_auth_config(pki, tmp_path))
    tls = client_context(pki)
    good = (USER, PASSWORD)

    code, headers = await status(http, served.url("/metrics"), ssl_context=tls)
    assert code == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="retargeting-exporter", charset="UTF-8"'
    assert headers["X-Frame-Options"] == "deny"  # headers apply to rejections too
    for auth in ((USER, "wrong"), ("nobody", PASSWORD), (USER, ""), ("other", PASSWORD)):
        assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 401
    malformed = {"Authorization": "Basic !!!not-base64"}
    assert (await status(http, served.url("/"), ssl_context=tls, headers=malformed))[0] == 401

    code, headers = await status(http, served.url("/metrics"), ssl_context=tls, auth=good)
    assert code == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert (await status(http, served.url("/"), ssl_context=tls, auth=("other", "other-pass")))[
        0
    ] == 200

    # Probes need no credentials (kubelet cannot send them); nothing else is open, not even
    # paths that do not exist, and no spelling of a path sneaks through an open one.
    # (The poller is not started here: both answer 503, from their handlers.)
    assert (await status(http, served.url("/-/healthy"), ssl_context=tls))[0] == 503
    assert (await status(http, served.url("/-/ready"), ssl_context=tls))[0] == 503
    for path in ("/nope", "/-/healthy/../metrics", "/-/healthy%2F..%2Fmetrics", "//metrics"):
        assert (await status(http, served.url(path), ssl_context=tls))[0] == 401, path
    code, headers = await status(http, served.url("/nope"), ssl_context=tls, auth=good)
    assert code == 404 and headers["X-Frame-Options"] == "deny"

    # Reload: POST only, and only with credentials.
    assert (await status(http, served.url("/-/reload"), ssl_context=tls, method="POST"))[0] == 401
    assert served.reloads == []
    assert (await status(http, served.url("/-/reload"), ssl_context=tls, auth=good))[0] == 405
    reload = await status(http, served.url("/-/reload"), ssl_context=tls, auth=good, method="POST")
    assert reload[0] == 200 and served.reloads == ["called"]


async def test_successful_checks_are_cached_and_failures_cost_one_check_each(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    served = await serve(tls_auth_config(pki, tmp_path))
    tls = client_context(pki)
    for _ in range(5):
        auth = (USER, PASSWORD)
        assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 200
    assert served.guard.bcrypt_checks == 1
    # An unknown user costs a bcrypt check as a known one does (no user enumeration by timing).
    auth = ("nobody", "guess")
    assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 401
    assert served.guard.bcrypt_checks == 2
    assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 401
    assert served.guard.bcrypt_checks == 2


async def test_plain_http_against_the_tls_port_fails(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    served = await serve(tls_auth_config(pki, tmp_path))
    with pytest.raises(aiohttp.ClientError):
        await status(http, served.url("/-/healthy", scheme="http"))
    # An untrusted certificate is refused by a verifying client.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await status(http, served.url("/-/healthy"), ssl_context=ssl.create_default_context())


async def test_client_certificate_required(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    clients = Pki(tmp_path, "client-ca")
    path = tls_auth_config(
        pki,
        tmp_path,
        client_ca_file=str(clients.ca_file),
        client_auth_type="RequireAndVerifyClientCert",
    )
    served = await serve(path)
    auth = (USER, PASSWORD)
    with pytest.raises(aiohttp.ClientError):  # none given: the handshake fails
        await status(http, served.url("/-/healthy"), ssl_context=client_context(pki))
    stranger = Pki(stranger_dir(tmp_path), "stranger-ca").issue("stranger", server=False)
    with pytest.raises(aiohttp.ClientError):  # one from another CA: refused as well
        await status(http, served.url("/-/healthy"), ssl_context=client_context(pki, stranger))
    valid = client_context(pki, clients.issue("prometheus-client", server=False))
    assert (await status(http, served.url("/metrics"), ssl_context=valid, auth=auth))[0] == 200
    assert (await status(http, served.url("/metrics"), ssl_context=valid))[0] == 401


async def test_client_certificate_checked_if_given(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    clients = Pki(tmp_path, "client-ca")
    path = tls_auth_config(
        pki,
        tmp_path,
        client_ca_file=str(clients.ca_file),
        client_auth_type="VerifyClientCertIfGiven",
    )
    served = await serve(path)
    assert (await status(http, served.url("/-/healthy"), ssl_context=client_context(pki)))[0] == 503
    stranger = Pki(stranger_dir(tmp_path), "stranger-ca").issue("stranger", server=False)
    with pytest.raises(aiohttp.ClientError):
        await status(http, served.url("/-/healthy"), ssl_context=client_context(pki, stranger))
    valid = client_context(pki, clients.issue("client", server=False))
    assert (await status(http, served.url("/-/healthy"), ssl_context=valid))[0] == 503


async def test_min_version_refuses_older_clients(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    served = await serve(tls_auth_config(pki, tmp_path, min_version="TLS13"))
    old = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(aiohttp.ClientError):
        await status(http, served.url("/-/healthy"), ssl_context=old)
    assert (await status(http, served.url("/-/healthy"), ssl_context=client_context(pki)))[0] == 503


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_changes_apply_without_a_restart(
    pki: Pki, tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    path = tls_auth_config(pki, tmp_path)
    served = await serve(path)
    tls = client_context(pki)
    first = await served_serial(served.port, tls)
    data = yaml.safe_load(path.read_text())

    # A new password for the user; the old one stops working at once.
    data["basic_auth_users"][USER] = hashed("rotated-pass")
    write_web_config(path, data)

    async def rotated() -> bool:
        auth = (USER, "rotated-pass")
        return (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 200

    await eventually(rotated, "the new password")
    auth = (USER, PASSWORD)
    assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 401

    # A renewed certificate written over the old files is served to new connections.
    renewed = pki.issue("server")
    assert renewed.serial != first

    async def serving_renewed() -> bool:
        return await served_serial(served.port, tls) == renewed.serial

    await eventually(serving_renewed, "the renewed certificate")

    # Client certificates become required; then headers change.
    clients = Pki(tmp_path, "client-ca")
    data["tls_server_config"] |= {
        "client_ca_file": str(clients.ca_file),
        "client_auth_type": "RequireAndVerifyClientCert",
    }
    data["http_server_config"]["headers"] = {"X-Frame-Options": "sameorigin"}
    write_web_config(path, data)

    async def refused_without_client_cert() -> bool:
        try:
            await status(http, served.url("/-/healthy"), ssl_context=tls)
        except aiohttp.ClientError:
            return True
        return False

    await eventually(refused_without_client_cert, "client certificates required")
    valid = client_context(pki, clients.issue("client", server=False))
    code, headers = await status(http, served.url("/-/healthy"), ssl_context=valid)
    assert code == 503 and headers["X-Frame-Options"] == "sameorigin"
    assert "X-Content-Type-Options" not in headers


async def test_an_invalid_change_is_rejected_once_and_the_config_in_force_stays(
    pki: Pki,
    tmp_path: Path,
    serve: ServeFn,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tls_auth_config(pki, tmp_path)
    served = await serve(path)
    tls = client_context(pki)
    good = (USER, PASSWORD)
    data = yaml.safe_load(path.read_text())
    caplog.set_level(logging.INFO, logger="exporter.webconfig")

    def rejections() -> list[str]:
        return [
            f"{r.getMessage()} {r.__dict__['error']}"
            for r in caplog.records
            if "rejected" in r.getMessage()
        ]

    async def rejected(count: int) -> bool:
        return len(rejections()) == count

    for change, problem in (
        ({"basic_auth_users": {USER: "not-a-hash"}}, "basic_auth_users.prometheus: must be"),
        ({"basic_auth_users": {}}, "turning authentication off needs a restart"),
        ({"tls_server_config": None}, "tls_server_config: turning TLS off needs a restart"),
    ):
        count = len(rejections())
        write_web_config(path, data | change)
        await eventually(lambda c=count + 1: rejected(c), f"rejection of {change}")
        assert problem in rejections()[-1]
        assert (await status(http, served.url("/metrics"), ssl_context=tls, auth=good))[0] == 200
        assert (await status(http, served.url("/metrics"), ssl_context=tls))[0] == 401
    # Logged once per change, not once per check.
    await asyncio.sleep(served.guard.check_interval * 4)
    assert len(rejections()) == 3

    # Fixed: applied, and logged.
    data["basic_auth_users"] = {"new-user": hashed("new-pass")}
    write_web_config(path, data)

    async def new_user_works() -> bool:
        auth = ("new-user", "new-pass")
        return (await status(http, served.url("/metrics"), ssl_context=tls, auth=auth))[0] == 200

    await eventually(new_user_works, "the fixed file")
    assert any(r.getMessage() == "web configuration reloaded" for r in caplog.records)
    assert "new-pass" not in caplog.text and PASSWORD not in caplog.text


async def test_basic_auth_without_tls_and_auth_turned_on_at_runtime(
    tmp_path: Path, serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    path = write_web_config(tmp_path / "web.yml", {"http_server_config": {"headers": {}}})
    served = await serve(path)
    assert served.guard.ssl_context is None
    assert (await status(http, served.url("/metrics", scheme="http")))[0] == 200
    write_web_config(path, {"basic_auth_users": {USER: hashed(PASSWORD)}})

    async def protected() -> bool:
        return (await status(http, served.url("/metrics", scheme="http")))[0] == 401

    await eventually(protected, "basic auth turned on")
    auth = (USER, PASSWORD)
    assert (await status(http, served.url("/metrics", scheme="http"), auth=auth))[0] == 200


# -- the daemon, scraped by a real Prometheus ---------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "web.yml:\n  - file not found"),
        (
            "basic_auth_users: {alice: secret}\n",
            "  - basic_auth_users.alice: must be a bcrypt hash",
        ),
        (
            "tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n",
            "  - tls_server_config.cert_file: cannot read",
        ),
        ("tls_server_config: [\n", "  - line 2, column 1: "),
    ],
)
def test_an_invalid_web_config_exits_2_with_a_clear_message(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "web.yml"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*EXE, "--demo", "--web.listen-address=127.0.0.1:0", f"--web.config.file={path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"retargeting-exporter: --web.config.file: invalid configuration {path}"
    )
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_config_check_validates_the_web_config(pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("accounts: [{name: a, rest_key_env: WEB_CHECK_KEY}]\n")
    web_yml = tls_auth_config(pki, tmp_path)
    env = dict(os.environ) | {"WEB_CHECK_KEY": "web-check-key-1"}
    args = [*EXE, f"--config.file={config}", f"--web.config.file={web_yml}", "--config.check"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert f"web config {web_yml} is valid: TLS on (min_version TLS12" in result.stdout
    web_yml.write_text("basic_auth_users: {alice: x}\n")
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "basic_auth_users.alice" in result.stderr


class Process:
    """A subprocess whose stderr is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def spawn(*args: str) -> Process:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    return Process(proc)


@pytest.mark.e2e
async def test_prometheus_scrapes_over_https_with_basic_auth_and_a_client_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    prometheus = require_tool("prometheus")
    clients = Pki(tmp_path, "client-ca")
    scraper = clients.issue("prometheus-client", server=False)
    server = pki.issue("server")
    web_yml = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key_file": "server.key",
                "client_ca_file": "client-ca.crt",
                "client_auth_type": "RequireAndVerifyClientCert",
            },
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            "basic_auth_users": {USER: hashed(PASSWORD)},
        },
    )
    port, prom_port = free_ports(2)
    target = f"127.0.0.1:{port}"

    def job(name: str, password: str, client_cert: bool = True) -> dict[str, Any]:
        tls: dict[str, str] = {"ca_file": str(pki.ca_file)}
        if client_cert:
            tls |= {"cert_file": str(scraper.cert), "key_file": str(scraper.key)}
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": tls,
            "basic_auth": {"username": USER, "password": password},
            "static_configs": [{"targets": [target]}],
        }

    prom_yml = tmp_path / "prometheus.yml"
    prom_yml.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    job("good", PASSWORD),
                    job("wrong-password", "not-the-password"),
                    job("no-client-cert", PASSWORD, client_cert=False),
                    job("rotated", "rotated-pass"),
                ],
            }
        )
    )
    exporter = await spawn(
        *EXE,
        "--demo",
        "--demo.interval=2s",
        f"--web.listen-address={target}",
        f"--web.config.file={web_yml}",
    )
    server_proc = await spawn(
        prometheus,
        f"--config.file={prom_yml}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1/targets"

    async def targets(session: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        try:
            async with session.get(api) as response:
                if response.status != 200:
                    return {}
                body = await response.json()
        except aiohttp.ClientError:
            return {}
        return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}

    async def wait_health(
        session: aiohttp.ClientSession, want: dict[str, str], timeout: float = 30
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            seen = await targets(session)
            if all(seen.get(j, {}).get("health") == h for j, h in want.items()):
                return seen
            for process in (exporter, server_proc):
                assert process.proc.returncode is None, "".join(process.log)
            await asyncio.sleep(0.2)
        raise AssertionError(f"targets never reached {want}: {seen}\n{''.join(exporter.log)}")

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            seen = await wait_health(
                session,
                {
                    "good": "up",
                    "wrong-password": "down",
                    "no-client-cert": "down",
                    "rotated": "down",
                },
            )
            assert "401 Unauthorized" in seen["wrong-password"]["lastError"]
            # Refused in the TLS handshake, before any HTTP status (a bare "401" could match
            # the random port in the error text).
            no_cert_error = seen["no-client-cert"]["lastError"]
            assert no_cert_error and "401 Unauthorized" not in no_cert_error
            assert "401 Unauthorized" in seen["rotated"]["lastError"]

            # The scraped data is the exporter's.
            query = f"http://127.0.0.1:{prom_port}/api/v1/query"
            params = {"query": 'retargeting_up{job="good",account="demo-fashion"}'}
            async with session.get(query, params=params) as response:
                result = (await response.json())["data"]["result"]
            assert result and result[0]["value"][1] == "1"

            # Rotate the password in the file: the old one fails, the new one works, no restart.
            data = yaml.safe_load(web_yml.read_text())
            data["basic_auth_users"] = {USER: hashed("rotated-pass")}
            write_web_config(web_yml, data)
            seen = await wait_health(session, {"good": "down", "rotated": "up"})
            assert "401 Unauthorized" in seen["good"]["lastError"]

            # Renew the server certificate: new connections get it, scrapes go on.
            renewed = pki.issue("server")
            assert renewed.serial != server.serial
            context = client_context(pki, scraper)
            deadline = time.monotonic() + 10
            while await served_serial(port, context) != renewed.serial:
                assert time.monotonic() < deadline, "the renewed certificate was never served"
                await asyncio.sleep(0.1)
            await wait_health(session, {"rotated": "up", "good": "down"})

            # Headers, over the real daemon.
            auth = {"Authorization": aiohttp.encode_basic_auth(USER, "rotated-pass")}
            url = f"https://{target}/metrics"
            async with session.get(url, ssl=context, headers=auth) as response:
                assert response.status == 200
                assert response.headers["X-Frame-Options"] == "deny"
            async with session.get(url, ssl=context) as response:
                assert response.status == 401 and "WWW-Authenticate" in response.headers
    finally:
        await server_proc.stop()
        await exporter.stop()
    assert exporter.proc.returncode == 0
    log = "".join(exporter.log)
    assert 'msg="web configuration reloaded"' in log
    assert "rotated-pass" not in log and PASSWORD not in log
