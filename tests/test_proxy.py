"""API requests through a real HTTP proxy (Debian's tinyproxy) on 127.0.0.1.

Over http the proxy forwards the request; over https it opens a tunnel (CONNECT) and TLS runs
end to end with the test CA. ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (either case) are
honoured; ``proxy_url`` overrides them. A proxy that is down or refuses names only its own
address, never its credentials nor the API URL (the key travels in its query string).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import Clients
from rawhttp import RawServer, response
from test_webconfig import Pki
from tinyproxy import Tinyproxy
from tooling import free_port

from exporter.client import TrafficSourceClient
from exporter.config import RestKey, parse_config
from exporter.errors import ApiError, ApiErrorReason
from exporter.fakeapi import FakeAccount, FakeApi

pytestmark = pytest.mark.e2e

KEY = "proxy-test-key-4d1c"
PASSWORD = "pr0xy-pa55-9e2f"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WRONG_CREDENTIALS = "(proxy credentials missing or wrong)"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the proxy variables it means; none leak in from the machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(KEY, seed=3)])
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Tinyproxy]:
    async with Tinyproxy(tmp_path) as running:
        yield running


@pytest.fixture
async def guarded_proxy(tmp_path: Path) -> AsyncIterator[Tinyproxy]:
    async with Tinyproxy(tmp_path, user="exporter", password=PASSWORD) as running:
        yield running


@pytest.fixture
async def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RawServer]:
    """An https stand-in of the API whose certificate the client trusts via SSL_CERT_FILE."""
    pki = Pki(tmp_path)
    issued = pki.issue("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    success = response((FIXTURES / "traffic-source-success.json").read_bytes())
    async with RawServer(success, tls=context) as server:
        yield server


def client(clients: Clients, url: str, proxy_url: str | None = None) -> TrafficSourceClient:
    made = TrafficSourceClient(url, timeout=5.0, user_agent="proxy-test", proxy_url=proxy_url)
    clients.made.append(made)
    return made


async def failure(made: TrafficSourceClient) -> ApiError:
    with pytest.raises(ApiError) as info:
        await made.fetch(RestKey(KEY), 1_700_000_000, 1_700_086_400)
    error = info.value
    for secret in (KEY, PASSWORD, "rest_key"):
        assert secret not in str(error) and secret not in error.message
    assert error.__cause__ is None and error.__suppress_context__
    return error


async def rows(made: TrafficSourceClient) -> int:
    return len(await made.fetch(RestKey(KEY), 1_700_000_000, 1_700_086_400))


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


async def test_http_through_the_proxy_url(
    fake: FakeApi, proxy: Tinyproxy, clients: Clients
) -> None:
    assert await rows(client(clients, fake.url, proxy.url())) == 4
    (line,) = proxy.requests()
    assert line.startswith(f"GET http://127.0.0.1:{port_of(fake.url)}/v1/partners-api/")
    assert fake.count(KEY) == 1


async def test_the_configured_proxy_url_with_credentials(
    fake: FakeApi, guarded_proxy: Tinyproxy, clients: Clients, tmp_path: Path
) -> None:
    """``api.proxy_url`` in the configuration, as the daemon reads it, reaches the proxy."""
    data = {
        "api": {"url": fake.url, "proxy_url": guarded_proxy.url(f"exporter:{PASSWORD}")},
        "accounts": [{"name": "shop", "rest_key_env": "SHOP_KEY"}],
    }
    config = parse_config(data, env={"SHOP_KEY": KEY}, base_dir=tmp_path)
    assert PASSWORD not in repr(config)
    assert await rows(clients.for_api(config.api)) == 4
    assert len(guarded_proxy.requests()) == 1 and fake.count(KEY) == 1


async def test_https_through_a_tunnel_with_the_test_ca(
    tls_server: RawServer, proxy: Tinyproxy, clients: Clients
) -> None:
    made = client(clients, tls_server.url, proxy.url())
    assert [await rows(made), await rows(made)] == [4, 4]
    assert proxy.requests() == [f"CONNECT localhost:{tls_server.port} HTTP/1.1"]  # one, kept
    assert len(tls_server.requests) == 2


@pytest.mark.parametrize("case", [str.upper, str.lower], ids=["upper", "lower"])
async def test_the_environment_names_the_proxy(
    fake: FakeApi,
    tls_server: RawServer,
    proxy: Tinyproxy,
    clients: Clients,
    monkeypatch: pytest.MonkeyPatch,
    case: Callable[[str], str],
) -> None:
    monkeypatch.setenv(case("HTTP_PROXY"), proxy.url())
    monkeypatch.setenv(case("HTTPS_PROXY"), proxy.url())
    assert await rows(client(clients, fake.url)) == 4
    assert await rows(client(clients, tls_server.url)) == 4
    assert [line.split(" ")[0] for line in proxy.requests()] == ["GET", "CONNECT"]


async def test_no_proxy_bypasses_the_proxy(
    fake: FakeApi, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert await rows(client(clients, fake.url)) == 4


async def test_the_proxy_url_overrides_the_environment(
    fake: FakeApi, proxy: Tinyproxy, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the configured proxy is used all the same
    assert await rows(client(clients, fake.url, proxy.url())) == 4
    assert len(proxy.requests()) == 1


@pytest.mark.parametrize("from_env", [False, True], ids=["proxy_url", "environment"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_is_down_names_only_its_address(
    fake: FakeApi,
    tls_server: RawServer,
    clients: Clients,
    monkeypatch: pytest.MonkeyPatch,
    from_env: bool,
    scheme: str,
) -> None:
    port = free_port()
    down = f"http://exporter:{PASSWORD}@127.0.0.1:{port}"
    if from_env:
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", down)
    url = fake.url if scheme == "http" else tls_server.url
    error = await failure(client(clients, url, None if from_env else down))
    assert error.reason is ApiErrorReason.CONNECTION_ERROR
    assert error.message == f"cannot connect to the proxy 127.0.0.1:{port}: Connection refused"


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_proxy_credentials(
    fake: FakeApi,
    tls_server: RawServer,
    guarded_proxy: Tinyproxy,
    clients: Clients,
    scheme: str,
) -> None:
    url = fake.url if scheme == "http" else tls_server.url
    assert await rows(client(clients, url, guarded_proxy.url(f"exporter:{PASSWORD}"))) == 4
    for credentials in ("", "exporter:wrong-" + PASSWORD):
        error = await failure(client(clients, url, guarded_proxy.url(credentials)))
        assert error.reason is ApiErrorReason.CONNECTION_ERROR
        what = "request" if scheme == "http" else "tunnel"
        assert error.message.startswith(f"the proxy {guarded_proxy.address} refused the {what}")
        # 407 without credentials; tinyproxy answers wrong ones with 401.
        assert error.message.endswith(f"HTTP {401 if credentials else 407} {WRONG_CREDENTIALS}")
        assert "exporter" not in error.message
