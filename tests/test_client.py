"""The API client against a real local HTTP fake of the vendor and a scripted raw HTTP server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Clients
from rawhttp import Answer, RawServer, response

from exporter.client import (
    ApiError,
    ApiErrorReason,
    TrafficRow,
    TrafficSourceClient,
    classify_response,
    parse_retry_after,
)
from exporter.config import RestKey
from exporter.fakeapi import (
    DOCUMENTED_EXAMPLE_ROWS,
    AccountState,
    FakeAccount,
    FakeApi,
    Fault,
    traffic_rows,
)

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
    """One GET with the key escaped in the query, no cookies, no redirects followed."""
    success = response(fixture("traffic-source-success.json"))
    async with RawServer(success) as server:
        rows = await client_for(clients, server.url).fetch(RestKey("k+y/=1 ü"), 100, 200)
    assert len(rows) == 4
    (request,) = server.requests
    assert request == (
        b"GET /v1/partners-api/traffic-source?rest_key=k%2By%2F%3D1%20%C3%BC"
        b"&date_from=100&date_to=200 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(server.port).encode() + b"\r\n"
        b"User-Agent: test-agent/1\r\nAccept: application/json\r\nConnection: keep-alive\r\n\r\n"
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
