"""The API client against a real local HTTP fake of the vendor and a scripted raw HTTP server."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Clients
from rawhttp import Answer, RawServer, response
from test_webconfig import Pki

from exporter.client import TrafficSourceClient, classify_response, parse_retry_after
from exporter.config import ApiConfig, ProxyUrl, RestKey
from exporter.errors import ApiError, ApiErrorReason
from exporter.fakeapi import (
    DOCUMENTED_EXAMPLE_ROWS,
    AccountState,
    FakeAccount,
    FakeApi,
    Fault,
    traffic_rows,
)
from exporter.traffic import TrafficRow

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KEY = "client-test-key-7f3a"
INACTIVE_KEY = "client-test-inactive-2b9c"
NOW = int(time.time())
DAY = 86400


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi([FakeAccount(KEY, seed=7), FakeAccount(INACTIVE_KEY, AccountState.INACTIVE)])
    await api.start()
    yield api
    await api.close()


def client_for(clients: Clients, url: str, timeout: float = 2.0) -> TrafficSourceClient:
    return clients.new(url, timeout=timeout, user_agent="test-agent/1")


async def fetch_error(client: TrafficSourceClient, key: str = KEY, span: int = DAY) -> ApiError:
    with pytest.raises(ApiError) as info:
        await client.fetch(RestKey(key), NOW - span, NOW)
    assert KEY not in str(info.value) and KEY not in info.value.message
    return info.value


# -- documented answers ----------------------------------------------------------------------


async def test_documented_success_example(fake: FakeApi, clients: Clients) -> None:
    fake.set_rows(KEY, DOCUMENTED_EXAMPLE_ROWS)
    rows = await client_for(clients, fake.url).fetch(RestKey(KEY), NOW - 30 * DAY, NOW)
    assert rows[0] == TrafficRow("Newsletter", 339895, 4629, 16, 3849, 0.0136, 0.0035)
    assert [r.source_name for r in rows] == [
        "Newsletter",
        "Triggered Emails",
        "Rec. Engine",
        "Pop-ups",
    ]
    # The vendor's own figures are kept, oddities included (ctr 1.00 with no impressions).
    assert rows[3].impressions == 0 and rows[3].ctr_ratio == 0.01
    assert rows[2].cvr_ratio == pytest.approx(0.0315)


async def test_request_carries_window_and_key(fake: FakeApi, clients: Clients) -> None:
    rows = await client_for(clients, fake.url).fetch(RestKey(KEY), NOW - DAY, NOW)
    (request,) = fake.requests
    assert (request.rest_key, request.date_from, request.date_to) == (KEY, str(NOW - DAY), str(NOW))
    expected = traffic_rows(FakeAccount(KEY, seed=7), NOW - DAY, NOW)
    assert [(r.source_name, r.impressions, r.clicks) for r in rows] == [
        (e["source_name"], e["impressions"], e["click"]) for e in expected
    ]


@pytest.mark.parametrize("status", [200, 400, 401, 403, 500])
@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        (Fault.INVALID_KEY, ApiErrorReason.INVALID_KEY, "Incorrect rest key!"),
        (Fault.ACCOUNT_INACTIVE, ApiErrorReason.ACCOUNT_INACTIVE, "Your account is not active!"),
        (
            Fault.INTERVAL_TOO_LONG,
            ApiErrorReason.INTERVAL_TOO_LONG,
            "Interval is greater than 30 days",
        ),
        (Fault.SOMETHING_WENT_WRONG, ApiErrorReason.API_ERROR, "Something went wrong"),
        (
            Fault.VALIDATION_FAILED,
            ApiErrorReason.VALIDATION_FAILED,
            "The date from field is required when date to is present.",
        ),
    ],
)
async def test_vendor_errors_are_classified_by_body_whatever_the_status(
    fake: FakeApi,
    clients: Clients,
    fault: Fault,
    reason: ApiErrorReason,
    message: str,
    status: int,
) -> None:
    fake.set_fault(fault, key=KEY, status=status)
    error = await fetch_error(client_for(clients, fake.url))
    assert (error.reason, error.message, error.status) == (reason, message, status)


async def test_real_vendor_rules_from_the_fake(fake: FakeApi, clients: Clients) -> None:
    client = client_for(clients, fake.url)
    assert (await fetch_error(client, key="unknown-key")).reason is ApiErrorReason.INVALID_KEY
    assert (await fetch_error(client, key=INACTIVE_KEY)).reason is ApiErrorReason.ACCOUNT_INACTIVE
    too_long = await fetch_error(client, span=30 * DAY + 1)
    assert too_long.reason is ApiErrorReason.INTERVAL_TOO_LONG
    assert not too_long.transient
    assert await client.fetch(RestKey(KEY), NOW - 30 * DAY, NOW)  # exactly 30 days is fine


# -- what the vendor did not document ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "params", "reason"),
    [
        (Fault.HTML_5XX, {}, ApiErrorReason.HTTP_ERROR),
        (Fault.HTML_5XX, {"status": 503}, ApiErrorReason.HTTP_ERROR),
        (Fault.RATE_LIMIT, {"retry_after": 7}, ApiErrorReason.RATE_LIMITED),
        (Fault.TRUNCATED_JSON, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.OVERSIZE, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.INVALID_UTF8, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.NEGATIVE_NUMBERS, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.FLOATS_FOR_INTS, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.NAN_STRINGS, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.NAN_STRINGS, {"bare": True}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.HUGE_INTEGERS, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.MISSING_FIELDS, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.DUPLICATE_SOURCES, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.DATA_NOT_LIST, {}, ApiErrorReason.INVALID_RESPONSE),
        (Fault.RESET, {}, ApiErrorReason.CONNECTION_ERROR),
        (Fault.DISCONNECT, {}, ApiErrorReason.CONNECTION_ERROR),
        (Fault.HANG, {}, ApiErrorReason.TIMEOUT),
        (Fault.SLOW_BODY, {"seconds": 5}, ApiErrorReason.TIMEOUT),
    ],
)
async def test_undocumented_failures_are_classified(
    fake: FakeApi,
    clients: Clients,
    fault: Fault,
    params: dict[str, object],
    reason: ApiErrorReason,
) -> None:
    fake.set_fault(fault, key=KEY, **params)
    error = await fetch_error(client_for(clients, fake.url, timeout=0.5))
    assert error.reason is reason, error.message
    assert error.transient


async def test_rate_limit_carries_retry_after(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=42)
    assert (await fetch_error(client_for(clients, fake.url))).retry_after == 42
    fake.set_fault(Fault.RATE_LIMIT, key=KEY, retry_after=30, retry_after_form="http-date")
    retry_after = (await fetch_error(client_for(clients, fake.url))).retry_after
    assert retry_after is not None and 27 <= retry_after <= 31


@pytest.mark.parametrize(
    "fault",
    [
        Fault.NUMBERS_AS_STRINGS,
        Fault.RATES_AS_NUMBERS,
        Fault.EXTRA_FIELDS,
        Fault.WRONG_CONTENT_TYPE,
    ],
)
async def test_harmless_quirks_are_accepted(fake: FakeApi, clients: Clients, fault: Fault) -> None:
    client = client_for(clients, fake.url)
    normal = await client.fetch(RestKey(KEY), NOW - DAY, NOW)
    fake.set_fault(fault, key=KEY)
    assert await client.fetch(RestKey(KEY), NOW - DAY, NOW) == normal


async def test_empty_data_is_a_success_without_rows(fake: FakeApi, clients: Clients) -> None:
    fake.set_fault(Fault.EMPTY_DATA, key=KEY)
    assert await client_for(clients, fake.url).fetch(RestKey(KEY), NOW - DAY, NOW) == ()


async def test_connection_refused(clients: Clients) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(clients, f"http://127.0.0.1:{port}/v1/partners-api/traffic-source")
    error = await fetch_error(client)
    assert error.reason is ApiErrorReason.CONNECTION_ERROR
    assert error.message == "cannot connect: Connection refused"
    assert "127.0.0.1" not in error.message  # nothing of the URL, which carries the key


# -- classification without a network ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, fixture("error-invalid-key.json"), ApiErrorReason.INVALID_KEY),
        (200, fixture("error-account-inactive.json"), ApiErrorReason.ACCOUNT_INACTIVE),
        (200, fixture("error-interval-too-long.json"), ApiErrorReason.INTERVAL_TOO_LONG),
        (200, fixture("error-something-went-wrong.json"), ApiErrorReason.API_ERROR),
        (422, fixture("fail-date-from-required.json"), ApiErrorReason.VALIDATION_FAILED),
        (429, fixture("error-something-went-wrong.json"), ApiErrorReason.RATE_LIMITED),
        (429, fixture("error-invalid-key.json"), ApiErrorReason.INVALID_KEY),
        (429, b"", ApiErrorReason.RATE_LIMITED),
        (404, b"<html>not found</html>", ApiErrorReason.HTTP_ERROR),
        (301, b"", ApiErrorReason.HTTP_ERROR),
        (200, b"", ApiErrorReason.INVALID_RESPONSE),
        (200, b"[]", ApiErrorReason.INVALID_RESPONSE),
        (200, b'{"data": []}', ApiErrorReason.INVALID_RESPONSE),
        (200, b'{"status": "success"}', ApiErrorReason.INVALID_RESPONSE),
        (200, b'{"status": "error"}', ApiErrorReason.API_ERROR),
        (200, b'{"status": "ERROR", "message": "Incorrect rest key!"}', ApiErrorReason.INVALID_KEY),
    ],
)
def test_classify_response(status: int, body: bytes, reason: ApiErrorReason) -> None:
    with pytest.raises(ApiError) as info:
        classify_response(status, body)
    assert info.value.reason is reason


def test_status_field_is_case_insensitive() -> None:
    assert classify_response(200, b'{"status": "Success", "data": []}') == ()


def test_success_fixture_parses() -> None:
    rows = classify_response(200, fixture("traffic-source-success.json"))
    assert sum(r.clicks for r in rows) == 4629 + 1743 + 7056
    assert {r.source_name for r in rows} == {
        "Newsletter",
        "Triggered Emails",
        "Rec. Engine",
        "Pop-ups",
    }


def test_vendor_messages_are_sanitised() -> None:
    body = json.dumps({"status": "error", "message": "boom\n\x1b[31m" + "x" * 500}).encode()
    with pytest.raises(ApiError) as info:
        classify_response(200, body)
    assert "\n" not in info.value.message and "\x1b" not in info.value.message
    assert len(info.value.message) <= 201


def test_permanent_and_transient_reasons() -> None:
    assert not ApiError(ApiErrorReason.INVALID_KEY, "").transient
    assert not ApiError(ApiErrorReason.ACCOUNT_INACTIVE, "").transient
    assert not ApiError(ApiErrorReason.HTTP_ERROR, "", status=404).transient
    assert ApiError(ApiErrorReason.HTTP_ERROR, "", status=502).transient
    assert ApiError(ApiErrorReason.API_ERROR, "").transient


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 60) == 0
    assert parse_retry_after("999999") == 3600
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# -- the exact request the client sends --------------------------------------------------------


async def test_request_bytes(clients: Clients) -> None:
    """One GET with the key escaped in the query, compression accepted, nothing else sent."""
    success = response(fixture("traffic-source-success.json"))
    async with RawServer(success) as server:
        rows = await client_for(clients, server.url).fetch(RestKey("k+y/=1 ü"), 100, 200)
    assert len(rows) == 4
    (request,) = server.requests
    assert request == (
        b"GET /v1/partners-api/traffic-source?rest_key=k%2By%2F%3D1%20%C3%BC"
        b"&date_from=100&date_to=200 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(server.port).encode() + b"\r\n"
        b"User-Agent: test-agent/1\r\nAccept: application/json\r\n"
        b"Accept-Encoding: gzip, deflate\r\n\r\n"
    )


async def test_a_redirect_is_not_followed(clients: Clients) -> None:
    moved = response("", status="302 Found", headers=("Location: http://example.test/",))
    async with RawServer(moved) as server:
        error = await fetch_error(client_for(clients, server.url))
        assert len(server.requests) == 1
    assert (error.reason, error.status) == (ApiErrorReason.HTTP_ERROR, 302)


async def test_connection_failure_text_never_holds_the_url(clients: Clients) -> None:
    """Whatever breaks below HTTP, the error is built from safe parts, with no context."""
    answers = [
        Answer(b"", close=True),  # closed without a response
        Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", close=True),
        Answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close=True),  # not HTTP at all
    ]
    async with RawServer(*answers) as server:
        client = client_for(clients, server.url)
        for _ in answers:
            with pytest.raises(ApiError) as info:
                await client.fetch(RestKey(KEY), 1, 2)
            assert info.value.reason is ApiErrorReason.CONNECTION_ERROR
            assert KEY not in str(info.value) and "127.0.0.1" not in str(info.value)
            assert info.value.__cause__ is None and info.value.__suppress_context__


# -- the HTTP layer: aiohttp's client as the exporter sets it up ---------------------------------

SUCCESS = fixture("traffic-source-success.json")


def chunked(*parts: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


async def test_requests_reuse_one_kept_alive_connection(clients: Clients) -> None:
    async with RawServer(response(SUCCESS)) as server:
        client = client_for(clients, server.url)
        for _ in range(3):
            assert len(await client.fetch(RestKey(KEY), 1, 2)) == 4
    assert server.connections == 1 and len(server.requests) == 3


async def test_requests_under_way_are_limited_to_max_concurrency(clients: Clients) -> None:
    api = FakeApi([FakeAccount(KEY, seed=1)], latency=0.05)
    url = await api.start()
    try:
        client = clients.for_api(ApiConfig(url=url, timeout=5.0, max_concurrency=3))
        results = await asyncio.gather(*(client.fetch(RestKey(KEY), 1, 2) for _ in range(12)))
    finally:
        await api.close()
    assert all(len(rows) == 4 for rows in results)
    assert api.max_in_flight == 3


@pytest.mark.parametrize(
    "raw",
    [
        response(gzip.compress(SUCCESS), headers=("Content-Encoding: gzip",)),
        response(zlib.compress(SUCCESS), headers=("Content-Encoding: deflate",)),
        chunked(SUCCESS[:100], SUCCESS[100:]),
        response(SUCCESS, length=False),  # ended by the connection's close
    ],
    ids=["gzip", "deflate", "chunked", "until-close"],
)
async def test_every_framing_and_compression_gives_the_same_rows(
    clients: Clients, raw: bytes
) -> None:
    answer = Answer(raw, close=b"Content-Length" not in raw and b"chunked" not in raw)
    async with RawServer(answer) as server:
        rows = await client_for(clients, server.url).fetch(RestKey(KEY), 1, 2)
    assert rows == classify_response(200, SUCCESS)


BIG = json.dumps({"status": "success", "data": [], "pad": "x" * 5000}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (response(BIG), f"body of {len(BIG)} bytes is over the 1000-byte cap"),
        (chunked(BIG[:2000], BIG[2000:]), "body is over the 1000-byte cap"),
        (response(BIG, length=False), "body is over the 1000-byte cap"),
        (
            response(gzip.compress(BIG), headers=("Content-Encoding: gzip",)),
            "body is over the 1000-byte cap",  # small on the wire, over the cap unpacked
        ),
    ],
    ids=["declared", "chunked", "until-close", "gzip-bomb"],
)
async def test_a_body_over_the_cap_is_refused_while_reading(
    clients: Clients, raw: bytes, message: str
) -> None:
    async with RawServer(Answer(raw, close=b"Content-Length" not in raw)) as server:
        client = TrafficSourceClient(server.url, timeout=2.0, user_agent="t", max_body=1000)
        clients.made.append(client)
        error = await fetch_error(client)
    assert (error.reason, error.message) == (ApiErrorReason.INVALID_RESPONSE, message)


async def test_a_lying_content_length_cannot_carry_more_than_it_says(clients: Clients) -> None:
    body = b'{"status": "success", "data": []}'
    lying = response(body, headers=(f"Content-Length: {len(body)}",), length=False) + b"x" * 5000
    async with RawServer(Answer(lying, close=True)) as server:
        client = TrafficSourceClient(server.url, timeout=2.0, user_agent="t", max_body=1000)
        clients.made.append(client)
        try:
            outcome: object = await client.fetch(RestKey(KEY), 1, 2)
        except ApiError as error:  # the extra bytes, read as a next answer, are not HTTP
            outcome = (error.reason, error.message)
    # The declared body, or a refusal of what follows it; never the 5,000 bytes after it.
    assert outcome in ((), (ApiErrorReason.CONNECTION_ERROR, "malformed HTTP answer"))


@pytest.mark.parametrize(
    ("answer", "reason", "message"),
    [
        (
            Answer(b"", close=True),
            ApiErrorReason.CONNECTION_ERROR,
            "the server closed the connection",
        ),
        (
            Answer(response(SUCCESS)[:-20], close=True),
            ApiErrorReason.CONNECTION_ERROR,
            "the connection broke while reading the body",
        ),
        (
            Answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close=True),
            ApiErrorReason.CONNECTION_ERROR,
            "malformed HTTP answer",
        ),
        (
            Answer(response(b"not gzip", headers=("Content-Encoding: gzip",))),
            ApiErrorReason.INVALID_RESPONSE,
            "the compressed body cannot be decoded",
        ),
    ],
    ids=["nothing", "short-body", "not-http", "bad-gzip"],
)
async def test_broken_answers_are_classified_without_the_url(
    clients: Clients, answer: Answer, reason: ApiErrorReason, message: str
) -> None:
    async with RawServer(answer) as server:
        error = await fetch_error(client_for(clients, server.url))
    assert (error.reason, error.message) == (reason, message)
    assert error.__cause__ is None and error.__suppress_context__


async def test_the_timeout_covers_a_body_that_stops_coming(clients: Clients) -> None:
    async with RawServer(response(SUCCESS)[:-5]) as server:  # the rest never comes
        error = await fetch_error(client_for(clients, server.url, timeout=0.3))
    assert (error.reason, error.message) == (
        ApiErrorReason.TIMEOUT,
        "no complete answer within the timeout",
    )


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://elsewhere.example/steal?rest_key=x", "HTTP 302 redirect to elsewhere.example"),
        ("/v2/partners-api/traffic-source?rest_key=x", "HTTP 302 redirect to 127.0.0.1"),
        (None, "HTTP 302 redirect without a usable Location"),
    ],
)
async def test_a_redirect_is_not_followed_and_names_only_the_host(
    clients: Clients, location: str | None, message: str
) -> None:
    headers = (f"Location: {location}",) if location else ()
    async with RawServer(response("", status="302 Found", headers=headers)) as server:
        error = await fetch_error(client_for(clients, server.url))
        assert len(server.requests) == 1
    assert (error.reason, error.status) == (ApiErrorReason.HTTP_ERROR, 302)
    assert error.message == f"{message}, not followed"
    assert "rest_key" not in error.message and "steal" not in error.message


async def test_an_unresolvable_host(clients: Clients) -> None:
    error = await fetch_error(client_for(clients, "http://api.example.invalid/traffic-source"))
    assert error.reason is ApiErrorReason.CONNECTION_ERROR
    assert error.message.startswith("cannot resolve: ")
    assert "example.invalid" not in error.message


async def test_tls_is_verified_against_the_system_cas_or_ssl_cert_file(
    clients: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = Pki(tmp_path)
    issued = pki.issue("localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(issued.cert, issued.key)
    async with RawServer(response(SUCCESS), tls=server_tls) as server:
        error = await fetch_error(client_for(clients, server.url))  # the system's CAs only
        assert error.reason is ApiErrorReason.CONNECTION_ERROR
        assert error.message.startswith("TLS certificate verification failed: ")
        # OpenSSL's SSL_CERT_FILE (documented in the README) points the default elsewhere.
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
        trusted = client_for(clients, server.url)
        for _ in range(2):
            assert len(await trusted.fetch(RestKey(KEY), 1, 2)) == 4
    assert len(server.requests) == 2


async def test_close_lets_the_requests_under_way_finish(clients: Clients) -> None:
    """A reload retires a client with close(): its last polls must not fail for it."""
    async with RawServer(Answer(response(SUCCESS), delay=0.2)) as server:
        client = TrafficSourceClient(server.url, timeout=5.0, user_agent="t")
        under_way = asyncio.create_task(client.fetch(RestKey(KEY), 1, 2))
        while not server.requests:
            await asyncio.sleep(0.01)
        await client.close()
        assert len(await under_way) == 4


def test_a_reload_keeps_the_client_only_for_the_same_endpoint() -> None:
    async def check() -> None:
        api = ApiConfig(url="http://127.0.0.1:1/x", max_concurrency=4)
        async with TrafficSourceClient.for_api(api) as client:
            assert client.serves(api)
            assert client.serves(replace(api, timeout=99.0))  # applied to later requests
            assert not client.serves(replace(api, url="http://127.0.0.1:2/x"))
            assert not client.serves(replace(api, max_concurrency=5))
            assert not client.serves(replace(api, user_agent="other"))
            proxy = ProxyUrl.parse("http://u:p@127.0.0.1:3128")
            assert not client.serves(replace(api, proxy_url=proxy))
        async with TrafficSourceClient.for_api(replace(api, proxy_url=proxy)) as proxied:
            assert proxied.serves(replace(api, proxy_url=ProxyUrl.parse(proxy.reveal())))
            assert not proxied.serves(
                replace(api, proxy_url=ProxyUrl.parse("http://u:q@127.0.0.1:3128"))
            )
            assert not proxied.serves(api)

    asyncio.run(check())
