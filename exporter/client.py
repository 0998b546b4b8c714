"""The Retargeting Traffic Source API client: one request in, one classified result out.

It knows nothing of Prometheus or of the store. Every failure becomes an ``ApiError`` with a
bounded ``ApiErrorReason``. The rest key travels in the query string, so no exception text, URL or
aiohttp message is ever passed on: messages are built here from safe parts only.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import aiohttp.helpers
import aiohttp.http_exceptions
import yarl

from exporter.config import ApiConfig, RestKey
from exporter.errors import ApiError, ApiErrorReason
from exporter.traffic import TrafficRow, parse_rows, safe_text

MAX_BODY_BYTES = 1024 * 1024
MAX_RETRY_AFTER = 3600.0
KEEPALIVE_SECONDS = 15.0  # an idle connection is not reused after this (servers close them)
DNS_TTL_SECONDS = 300


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


# One decoder for every answer (json.loads with an option builds a new one per call).
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


_VENDOR_MESSAGES = (
    ("incorrect rest key", ApiErrorReason.INVALID_KEY),
    ("not active", ApiErrorReason.ACCOUNT_INACTIVE),
    ("greater than 30 days", ApiErrorReason.INTERVAL_TOO_LONG),
)


def _vendor_error(body: Mapping[str, Any], vendor_status: str, status: int) -> ApiError:
    """Classify a body whose ``status`` is ``error`` or ``fail``."""
    if vendor_status == "fail":
        detail = "request rejected by the API's validator"
        validator = (
            body.get("data", {}).get("validator") if isinstance(body.get("data"), dict) else None
        )
        if isinstance(validator, dict):
            messages = [
                str(m) for v in validator.values() for m in (v if isinstance(v, list) else [v])
            ]
            detail = safe_text("; ".join(messages)) or detail
        return ApiError(ApiErrorReason.VALIDATION_FAILED, detail, status=status)
    raw = body.get("message")
    message = safe_text(raw) if isinstance(raw, str) and raw.strip() else "error without a message"
    lowered = message.lower()
    for needle, reason in _VENDOR_MESSAGES:
        if needle in lowered:
            return ApiError(reason, message, status=status)
    return ApiError(ApiErrorReason.API_ERROR, message, status=status)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP-date form), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def classify_response(
    status: int, body: bytes, retry_after: str | None = None
) -> tuple[TrafficRow, ...]:
    """Turn one HTTP answer into rows, or raise ``ApiError``.

    The vendor's body decides first (its error statuses are undocumented); the HTTP status only
    classifies answers that carry no vendor body.
    """
    parsed: Any = None
    decode_problem = ""
    try:
        parsed = _JSON.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        decode_problem = "body is not valid UTF-8"
    except (ValueError, RecursionError):
        decode_problem = "body is not valid JSON" if body.strip() else "body is empty"
    vendor_status = parsed.get("status") if isinstance(parsed, dict) else None
    if isinstance(vendor_status, str):
        vendor_status = vendor_status.strip().lower()  # be lenient: "Success", "ERROR"
    if vendor_status in ("error", "fail"):
        error = _vendor_error(parsed, vendor_status, status)
        if status == 429:
            # A 429 with a generic error body ("Too Many Attempts.") is still rate limiting.
            if error.reason is ApiErrorReason.API_ERROR:
                error.reason = ApiErrorReason.RATE_LIMITED
            error.retry_after = parse_retry_after(retry_after)
        raise error
    if status == 429:
        raise ApiError(
            ApiErrorReason.RATE_LIMITED,
            "HTTP 429 Too Many Requests",
            status=status,
            retry_after=parse_retry_after(retry_after),
        )
    if vendor_status == "success" and isinstance(parsed, dict):
        try:
            return parse_rows(parsed.get("data"))
        except ValueError as exc:
            raise ApiError(ApiErrorReason.INVALID_RESPONSE, str(exc), status=status) from None
    if not 200 <= status < 300:
        raise ApiError(
            ApiErrorReason.HTTP_ERROR, f"HTTP {status} without an API body", status=status
        )
    if decode_problem:
        raise ApiError(ApiErrorReason.INVALID_RESPONSE, decode_problem, status=status)
    shape = "no status field" if isinstance(parsed, dict) else f"a JSON {type(parsed).__name__}"
    raise ApiError(ApiErrorReason.INVALID_RESPONSE, f"unexpected answer: {shape}", status=status)


def _strerror(error: OSError | None) -> str:
    """An OS error's own words ("Connection refused"), never its arguments (they hold addresses)."""
    if error is None:
        return "unknown error"
    if isinstance(error, socket.gaierror | ssl.SSLError):
        return safe_text(str(error.strerror or type(error).__name__), 100)
    if error.errno:
        return os.strerror(error.errno)
    return type(error).__name__


_AUTH = (401, 407)


def _proxy_refused(proxy: str, what: str, status: int) -> ApiError:
    hint = " (proxy credentials missing or wrong)" if status in _AUTH else ""
    return ApiError(
        ApiErrorReason.CONNECTION_ERROR,
        f"the proxy {proxy} refused the {what}: HTTP {status}{hint}",
        status=status,
    )


def _describe_exception(exc: BaseException, proxy: str | None) -> tuple[ApiErrorReason, str]:
    """A safe description of a request that got no usable HTTP answer.

    aiohttp's exception texts embed the request URL, and so the key: only their types and
    the OS error's own words are used. ``proxy`` is the proxy's ``host:port`` (never its
    credentials), named when the proxy is what failed.
    """
    if isinstance(exc, TimeoutError):  # asyncio's and aiohttp's timeouts are TimeoutErrors
        return ApiErrorReason.TIMEOUT, "no complete answer within the timeout"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        where = f"{exc.host}:{exc.port}"  # the proxy's address, from aiohttp's connection key
        return (
            ApiErrorReason.CONNECTION_ERROR,
            f"cannot connect to the proxy {where}: {_strerror(exc.os_error)}",
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        refused = _proxy_refused(proxy or "in use", "tunnel", exc.status)
        return refused.reason, refused.message
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
        return (
            ApiErrorReason.CONNECTION_ERROR,
            f"TLS certificate verification failed: {safe_text(str(detail), 100)}",
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return ApiErrorReason.CONNECTION_ERROR, f"TLS handshake failed: {_strerror(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return (
            ApiErrorReason.CONNECTION_ERROR,
            f"cannot resolve: {_strerror(exc.os_error)}",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ApiErrorReason.CONNECTION_ERROR, f"cannot connect: {_strerror(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ApiErrorReason.CONNECTION_ERROR, "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        if isinstance(exc.__cause__, aiohttp.http_exceptions.ContentEncodingError):
            return ApiErrorReason.INVALID_RESPONSE, "the compressed body cannot be decoded"
        return ApiErrorReason.CONNECTION_ERROR, "the connection broke while reading the body"
    if isinstance(exc, aiohttp.ClientResponseError):
        return ApiErrorReason.CONNECTION_ERROR, "malformed HTTP answer"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ApiErrorReason.CONNECTION_ERROR, f"connection failed ({type(exc).__name__})"
    return ApiErrorReason.CONNECTION_ERROR, f"request failed ({type(exc).__name__})"


def _spellings(secret: str) -> set[str]:
    """The ways a key can be written in a URL or in JSON text."""
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        secret.replace("/", "\\/"),  # PHP's json_encode escapes slashes
    } - {""}


def _without_secret(error: ApiError, secret: str) -> ApiError:
    """A fresh copy of ``error`` (no traceback, no context) whose message cannot show the key."""
    message = error.message
    for spelling in _spellings(secret):
        message = message.replace(spelling, "<redacted>")
        if message.endswith("…"):  # cut short by _safe_text: the key may be cut too
            for size in range(len(spelling) - 1, 3, -1):
                if message[:-1].endswith(spelling[:size]):
                    message = message[: -1 - size] + "<redacted>…"
                    break
    return ApiError(error.reason, message, status=error.status, retry_after=error.retry_after)


def _redirect_error(response: aiohttp.ClientResponse, api_host: str) -> ApiError:
    """A 3xx answer: never followed, as the key travels in the query string."""
    location = response.headers.get("Location", "")
    try:
        host = urllib.parse.urlsplit(location).hostname or (api_host if location else None)
    except ValueError:
        host = None
    target = f"to {safe_text(host, 100)}" if host else "without a usable Location"
    return ApiError(
        ApiErrorReason.HTTP_ERROR,
        f"HTTP {response.status} redirect {target}, not followed",
        status=response.status,
    )


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The (decompressed) body, refused as soon as it grows past ``cap`` bytes."""
    declared = response.content_length
    if declared is not None and declared > cap:
        raise ApiError(
            ApiErrorReason.INVALID_RESPONSE,
            f"body of {declared} bytes is over the {cap}-byte cap",
            status=response.status,
        )
    if declared is not None and not response.headers.get("Content-Encoding"):
        return await response.read()  # the parser stops at the declared length, within the cap
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise ApiError(
                ApiErrorReason.INVALID_RESPONSE,
                f"body is over the {cap}-byte cap",
                status=response.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _env_proxy(url: str) -> str | None:
    """The proxy that ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` (any case) pick for ``url``.

    aiohttp's own rules (``trust_env``), credentials (in the variable or ``~/.netrc``) kept.
    """
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(url))
    except LookupError:
        return None
    if auth is not None:
        proxy = proxy.with_user(auth.login).with_password(auth.password)
    return str(proxy)


class TrafficSourceClient:
    """Fetches one account's traffic-source figures for one window, on one aiohttp session.

    The session is made with the client and closed by ``close()`` (or ``async with``); create
    the client inside the running event loop. A ``proxy_url`` (which may carry credentials)
    overrides ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``, which are honoured otherwise.
    The environment is read when the client is made (at start, and by a reload that replaces it).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        user_agent: str,
        max_body: int = MAX_BODY_BYTES,
        max_concurrency: int = 8,
        proxy_url: str | None = None,
    ) -> None:
        self._url, self._user_agent = url, user_agent
        self._max_concurrency, self._proxy_url = max_concurrency, proxy_url
        self._max_body = max_body
        self.timeout = timeout  # a reload may change it; requests under way keep theirs
        parts = urllib.parse.urlsplit(url)
        self._api_host = parts.hostname or ""
        # The query is appended to the URL as text: built once, with the key quoted by _quote.
        self._prefix = url + ("&" if parts.query else "?") + "rest_key="
        # trust_env=True would look the environment up again, in a thread, for every request
        # (a multiple of the CPU of the request itself: docs/benchmarks.md). A running
        # process's environment does not change: it is read once, with aiohttp's own rules.
        self._proxy = proxy_url if proxy_url is not None else _env_proxy(url)
        self._proxy_name: str | None = None  # host:port, for messages (never the credentials)
        if self._proxy is not None:
            proxy = urllib.parse.urlsplit(self._proxy)
            host = proxy.hostname or "?"
            self._proxy_name = f"{f'[{host}]' if ':' in host else host}:{proxy.port or 80}"
        # A context of its own: the CAs are read now (SSL_CERT_FILE / SSL_CERT_DIR included).
        connector = aiohttp.TCPConnector(
            limit=max_concurrency,
            ttl_dns_cache=DNS_TTL_SECONDS,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=ssl.create_default_context(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Named, not aiohttp's default: that grows with the codecs installed (br, zstd).
            headers={
                "User-Agent": user_agent,
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
            },
            cookie_jar=aiohttp.DummyCookieJar(),  # the API sets none, and none is ever sent
            trust_env=False,  # the environment's proxy is self._proxy
            auto_decompress=True,
        )
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @classmethod
    def for_api(cls, api: ApiConfig) -> TrafficSourceClient:
        """The client for the ``api:`` section of the configuration."""
        return cls(
            api.url,
            timeout=api.timeout,
            user_agent=api.user_agent,
            max_concurrency=api.max_concurrency,
            proxy_url=api.proxy_url.reveal() if api.proxy_url is not None else None,
        )

    def serves(self, api: ApiConfig) -> bool:
        """Whether this client can go on serving ``api`` (a reload replaces it otherwise).

        Only the timeout may change on a live client; it applies to requests from then on.
        """
        proxy_url = api.proxy_url.reveal() if api.proxy_url is not None else None
        return (api.url, api.user_agent, api.max_concurrency, proxy_url) == (
            self._url,
            self._user_agent,
            self._max_concurrency,
            self._proxy_url,
        )

    async def __aenter__(self) -> TrafficSourceClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for the requests under way (each bounded by the timeout), then close the session.

        A reload retires a client this way: its last requests finish normally.
        """
        await self._drained.wait()
        await self._session.close()

    async def fetch(self, key: RestKey, date_from: int, date_to: int) -> tuple[TrafficRow, ...]:
        """One request. Returns the rows or raises ``ApiError``; never anything else.

        The key is in the request URL, and so in aiohttp's exceptions and in the frames that
        handled them. The ``ApiError`` raised here is always a fresh one, raised outside any
        ``except`` block: no ``__context__`` leads back to aiohttp, its traceback starts in this
        frame (whose locals hold no URL), and every spelling of the key is cut out of its
        message (a vendor error may quote the key back).
        """
        self._in_flight += 1
        self._drained.clear()
        try:
            return await self._request(key, date_from, date_to)
        except ApiError as error:
            failure = _without_secret(error, key.reveal())
        except Exception as exc:  # aiohttp and OS errors: reclassified without their text
            reason, message = _describe_exception(exc, self._proxy_name)
            failure = ApiError(reason, message)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._drained.set()
        raise failure from None

    async def _request(self, key: RestKey, date_from: int, date_to: int) -> tuple[TrafficRow, ...]:
        url = yarl.URL(
            f"{self._prefix}{_quote(key.reveal())}&date_from={date_from}&date_to={date_to}",
            encoded=True,
        )
        async with self._session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            proxy=self._proxy,
        ) as response:
            status = response.status
            if 300 <= status < 400:
                raise _redirect_error(response, self._api_host)
            body = await _read_capped(response, self._max_body)
        try:
            return classify_response(status, body, response.headers.get("Retry-After"))
        except ApiError as error:
            # The vendor asks for no HTTP authentication: through a proxy, a bare 401 or 407 is
            # the proxy's (tinyproxy answers wrong credentials with 401).
            if self._proxy_name and error.reason is ApiErrorReason.HTTP_ERROR and status in _AUTH:
                raise _proxy_refused(self._proxy_name, "request", status) from None
            raise


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")  # what percent-encoding leaves as it is


def _quote(text: str) -> str:
    if _UNRESERVED.fullmatch(text):  # the usual key: nothing to encode, and cheaper to see
        return text
    return urllib.parse.quote(text, safe="")
