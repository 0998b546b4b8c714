"""Property-based tests (hypothesis) for the response parser and the config loader (issue 5).

Whatever the vendor sends, ``classify_response`` returns rows or raises ``ApiError`` with a
bounded reason and a safe message; ``parse_rows`` returns rows or raises ``ValueError``; a
``Retry-After`` header becomes ``None`` or 0..3600 s. Whatever a config file holds,
``parse_config`` returns a ``Config`` or raises ``ConfigError``. Never anything else: an
unexpected exception would be a crash of the poll (counted as an internal error) or a traceback
at start-up. Example counts are modest: this file runs in seconds.
"""

from __future__ import annotations

import json
import math
import re
import string
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter import traffic
from exporter.client import MAX_RETRY_AFTER, classify_response, parse_retry_after
from exporter.config import Config, ProxyUrl, parse_config
from exporter.errors import ApiError, ApiErrorReason
from exporter.traffic import MAX_COUNT, TrafficRow, parse_rows
from exporter.yamlcheck import ConfigError

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies: what a vendor (or a proxy in front of it) might send ----------------------------

ROW_FIELDS = ("impressions", "click", "order", "revenue", "source_name", "cvr", "ctr")
HUGE = st.sampled_from([10**15, 10**15 + 1, 2**63, 10**30, 10**400, -(10**30)])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.from_regex(r"\A[ -]?[0-9]{1,25}(\.[0-9]{0,4})?%?\Z"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e308", "1e309", "0x10", "١٢", "²", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
numberish = st.one_of(scalars, st.lists(scalars, max_size=2))
source_names = st.one_of(
    st.sampled_from(["Newsletter", "Triggered Emails", "Rec. Engine", "Pop-ups", "SMS"]),
    st.text(max_size=120),
    st.just("\x00\x01\n"),
    numberish,
)
rows = st.fixed_dictionaries(
    {},
    optional={
        "impressions": numberish,
        "click": numberish,
        "order": numberish,
        "revenue": numberish,
        "source_name": source_names,
        "cvr": numberish,
        "ctr": numberish,
        "extra": json_values,
    },
)
statuses = st.one_of(
    st.sampled_from(["success", "error", "fail", "Success", " ERROR ", "ok"]), json_values
)
bodies_json = st.fixed_dictionaries(
    {},
    optional={
        "status": statuses,
        "data": st.one_of(st.lists(rows, max_size=6), json_values),
        "message": st.one_of(
            st.sampled_from(
                [
                    "Incorrect rest key!",
                    "Your account is not active!",
                    "Interval is greater than 30 days",
                    "Something went wrong",
                ]
            ),
            json_values,
        ),
    },
)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8")


bodies = st.one_of(
    bodies_json.map(encode),
    json_values.map(encode),
    st.binary(max_size=300),
    bodies_json.map(encode).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
    st.sampled_from(
        [
            b"",
            b"<html><body>502 Bad Gateway</body></html>",
            b'{"status": "success", "data": [' * 2000,  # deeper than the recursion limit
            b'{"status": "success", "data": [{"source_name": "\xff\xfe"}]}',
            b'\xef\xbb\xbf{"status": "success", "data": []}',  # a byte-order mark
            b'{"status": "success", "data": [{"impressions": 1' + b"0" * 5000 + b"}]}",
        ]
    ),
)
http_statuses = st.one_of(
    st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 422, 429, 500, 502, 503]),
    st.integers(0, 999),
)
retry_afters = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.from_regex(r"\A[0-9]{1,400}\Z"),
    st.sampled_from(
        [
            "120",
            "-5",
            "1.5",
            "²",
            "١٢٠",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Tue, 15 Nov 1994 08:12:31",
            "Tue, 15 Nov 1994 08:12:31 +9999",
            "Sun, 06 Nov 1994 08:49:37 GMT garbage",
        ]
    ),
)


def assert_valid_rows(result: tuple[TrafficRow, ...]) -> None:
    names = [r.source_name for r in result]
    assert len(set(names)) == len(names)
    for row in result:
        assert row.source_name and row.source_name.isprintable() and len(row.source_name) <= 101
        for count in (row.impressions, row.clicks, row.orders):
            assert type(count) is int and 0 <= count <= MAX_COUNT
        for amount in (row.revenue, row.ctr_ratio, row.cvr_ratio):
            assert isinstance(amount, float) and math.isfinite(amount) and amount >= 0


def assert_safe_error(error: ApiError) -> None:
    assert isinstance(error.reason, ApiErrorReason)
    assert isinstance(error.message, str) and error.message.isprintable()
    assert len(error.message) <= 300
    assert error.retry_after is None or 0 <= error.retry_after <= MAX_RETRY_AFTER


@SETTINGS
@given(status=http_statuses, body=bodies, retry_after=retry_afters)
def test_classify_response_gives_rows_or_an_api_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    try:
        result = classify_response(status, body, retry_after)
    except ApiError as error:
        assert_safe_error(error)
        if status == 429 and error.reason not in (
            ApiErrorReason.INVALID_KEY,
            ApiErrorReason.ACCOUNT_INACTIVE,
            ApiErrorReason.INTERVAL_TOO_LONG,
            ApiErrorReason.VALIDATION_FAILED,
        ):
            assert error.reason is ApiErrorReason.RATE_LIMITED
        return
    assert 200 <= status < 300 or status != 429  # a success comes with a success body
    assert_valid_rows(result)


@SETTINGS
@given(data=st.one_of(st.lists(rows, max_size=6), json_values))
def test_parse_rows_gives_rows_or_a_value_error(data: Any) -> None:
    try:
        result = parse_rows(data)
    except ValueError as error:
        assert str(error).isprintable()
        return
    assert isinstance(data, list) and len(result) == len(data)
    assert_valid_rows(result)


@SETTINGS
@given(value=retry_afters)
@example("²")  # a digit to str.isdigit(), not to float()
def test_retry_after_is_none_or_bounded(value: str | None) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER


# A well-formed answer must come out exactly as sent, whatever form the numbers take.
counts = st.integers(0, MAX_COUNT)
good_rows = st.lists(
    st.fixed_dictionaries(
        {
            "impressions": counts,
            "click": counts,
            "order": counts,
            "revenue": counts,
            "cvr": st.integers(0, 100_00),
            "ctr": st.integers(0, 100_00),
        }
    ),
    max_size=5,
)


@SETTINGS
@given(
    data=good_rows,
    counts_as_strings=st.booleans(),
    rates_as_numbers=st.booleans(),
    status_case=st.sampled_from(["success", "Success", "SUCCESS"]),
)
def test_well_formed_answers_parse_to_exactly_what_was_sent(
    data: list[dict[str, int]], counts_as_strings: bool, rates_as_numbers: bool, status_case: str
) -> None:
    sent = []
    for i, row in enumerate(data):
        wire: dict[str, Any] = {"source_name": f"Source {i}"}
        for name in ("impressions", "click", "order", "revenue"):
            wire[name] = str(row[name]) if counts_as_strings else row[name]
        for name in ("cvr", "ctr"):  # hundredths of a percent
            text = f"{row[name] // 100}.{row[name] % 100:02d}"
            wire[name] = float(text) if rates_as_numbers else text
        sent.append(wire)
    result = classify_response(200, encode({"status": status_case, "data": sent}))
    assert [r.source_name for r in result] == [w["source_name"] for w in sent]
    for got, row in zip(result, data, strict=True):
        assert (got.impressions, got.clicks, got.orders) == (
            row["impressions"],
            row["click"],
            row["order"],
        )
        assert got.revenue == row["revenue"]
        assert got.cvr_ratio == pytest.approx(row["cvr"] / 10000, rel=1e-12, abs=1e-15)
        assert got.ctr_ratio == pytest.approx(row["ctr"] / 10000, rel=1e-12, abs=1e-15)


# -- the config loader ---------------------------------------------------------------------------

TOP = ["api", "polling", "windows", "accounts", "max_sources_per_account", "timezone"]
API = ["url", "timeout", "max_concurrency", "user_agent", "retries", "proxy_url"]
RETRIES = ["attempts", "initial_backoff", "max_backoff"]
POLLING = ["interval", "jitter", "stale_after", "end_offset"]
ACCOUNT = [
    "name",
    "rest_key_env",
    "rest_key_file",
    "rest_key",
    "labels",
    "windows",
    "interval",
    "stale_after",
    "timezone",
]
KEY_FILES = ["key.txt", "empty.txt", "latin1.txt", "missing.txt", "keys", "a\x00b", ""]
ENV_NAMES = ["SHOP_KEY", "EMPTY", "UNSET"]

# Text that is never an absolute path (a random rest_key_file must not read /dev/zero).
safe_text = st.text(max_size=20).filter(lambda s: not s.lstrip().startswith(("/", "~")))
durations = st.one_of(
    st.from_regex(r"\A[0-9]{1,6}(ms|s|m|h|d|w)\Z"),
    st.from_regex(r"\A[0-9]{300,400}(s|d)\Z"),  # overflows a float
    st.sampled_from(["30s", "5m", "1h30m", "24h", "30d", "31d", "0s", "today", "yesterday"]),
)


def keyed(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Mappings mostly of known keys, now and then a typo or a non-string key."""
    names = st.one_of(st.sampled_from(keys), safe_text, st.integers(), st.booleans(), st.none())
    return st.dictionaries(names, values, max_size=len(keys) + 1)


def config_strategy(too_long: bool) -> st.SearchStrategy[Any]:
    """YAML-ish data: mostly the config's own keys, with values of every type and size."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        HUGE,
        # too long for str(); built lazily, since hypothesis prints strategies
        *([st.builds(lambda: 10**5000)] if too_long else []),
        st.floats(allow_nan=True, allow_infinity=True),
        safe_text,
        durations,
        st.sampled_from(
            [
                *KEY_FILES,
                *ENV_NAMES,
                "http://127.0.0.1:1/x",
                "UTC",
                "Europe/Bucharest",
                "Mars/Base",
                "http://u:p%40w@127.0.0.1:3128",
                "https://u:p@127.0.0.1:3128",
            ]
        ),
    )
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | keyed(ACCOUNT, inner), max_leaves=12
    )
    accounts = keyed(
        ACCOUNT,
        st.one_of(
            values, st.dictionaries(st.one_of(safe_text, st.integers()), scalars, max_size=3)
        ),
    )
    return st.one_of(
        values,
        st.fixed_dictionaries(
            {},
            optional={
                "api": keyed(API, st.one_of(values, keyed(RETRIES, values))),
                "polling": keyed(POLLING, values),
                "windows": st.lists(st.one_of(durations, scalars), max_size=4),
                "accounts": st.one_of(st.lists(accounts, max_size=4), values),
                "max_sources_per_account": scalars,
                "timezone": scalars,
                "extra": values,
            },
        ),
    )


envs = st.dictionaries(
    st.one_of(st.sampled_from(ENV_NAMES), st.text(max_size=8)),
    st.one_of(st.sampled_from(["", "  ", "k-123"]), st.text(max_size=10)),
    max_size=4,
)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("keys")
    (base / "key.txt").write_text("file-key-1\n")
    (base / "empty.txt").write_text("")
    (base / "latin1.txt").write_bytes(b"\xe9t\xe9\n")
    (base / "keys").mkdir()
    return base


def assert_sane(config: Config) -> None:
    """A config that loaded can be run: finite, positive timings; a key for every account."""
    assert config.accounts
    for account in config.accounts:
        assert account.rest_key.reveal().strip()
        assert math.isfinite(account.interval) and account.interval >= 30
        assert math.isfinite(account.stale_after) and account.stale_after >= account.interval
        assert account.windows
    for seconds in (
        config.api.timeout,
        config.api.retries.initial_backoff,
        config.api.retries.max_backoff,
        config.polling.interval,
        config.polling.jitter,
        config.polling.stale_after,
        config.polling.end_offset,
    ):
        assert math.isfinite(seconds) and seconds >= 0


@SETTINGS
@given(data=config_strategy(too_long=True), env=envs)
@example(data={"accounts": [{"name": "a", "rest_key": 10**5000}]}, env={})
@example(data={"accounts": [{"name": "a", "rest_key": "k", "labels": {"x": 10**5000}}]}, env={})
@example(data={"accounts": [{"name": "a", "rest_key_file": "a\x00b"}]}, env={})
@example(
    data={"polling": {"interval": 10**400}, "accounts": [{"name": "a", "rest_key": 1}]}, env={}
)
@example(
    data={"polling": {"interval": math.nan}, "accounts": [{"name": "a", "rest_key": 1}]}, env={}
)
@example(
    data={"polling": {"interval": math.inf}, "accounts": [{"name": "a", "rest_key": 1}]}, env={}
)
@example(data={"windows": ["9" * 400 + "s"], "accounts": [{"name": "a", "rest_key": 1}]}, env={})
@example(data={"api": {"max_concurrency": 10**5000}}, env={})
@example(data={10**5000: 1}, env={})
def test_parse_config_gives_a_config_or_a_config_error(
    data: Any, env: dict[str, str], key_dir: Path
) -> None:
    try:
        config = parse_config(data, env=env, base_dir=key_dir)
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) for p in error.problems)
        assert str(error)  # the message can be built
        return
    assert_sane(config)


@settings(SETTINGS, max_examples=100)
@given(
    text=st.one_of(
        st.text(max_size=200),
        config_strategy(too_long=False).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    )
)
@example(text="accounts: [{name: a, rest_key: 1" + "0" * 5000 + "}]")  # too long for int()
@example(text="accounts: &a [*a]")  # contains itself
@example(text="windows: " + "[" * 5000 + "]" * 5000)  # deeper than the stack
@example(text="api: {timeout: 2001-13-01}")  # a timestamp YAML cannot build
@example(text="polling: {interval: .nan}\naccounts: [{name: a, rest_key_env: SHOP_KEY}]")
def test_yaml_text_gives_a_config_or_a_config_error(text: str, tmp_path: Path) -> None:
    """The whole load path from file text (including YAML errors) to a result."""
    from exporter.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path, env={"SHOP_KEY": "k"})
    except ConfigError as error:
        assert error.problems
        return
    assert_sane(config)


USER_NEEDLE, PASSWORD_NEEDLE = "USRZQ4", "PWZQ5"
# Often the characters that end or split a URL's parts; any other ASCII; rarely non-ASCII.
url_text = st.text(
    st.sampled_from(list("/?#@:%[]. A")) | st.characters(codec="ascii") | st.just("\u20ac"),
    max_size=8,
)


@SETTINGS
@given(
    scheme=st.sampled_from(["http://", "HTTP://", "https://", "socks5://", "", "//"]),
    user=url_text,
    password=url_text,
    host=st.sampled_from(["proxy.example", "[::1]", "", "10.0.0.1", "[zz]"]),
    rest=st.one_of(url_text, st.sampled_from([":3128", ":0", ":99999", ":x", "/", "/p?q#f"])),
)
def test_proxy_urls_parse_or_are_refused_without_quoting_their_credentials(
    scheme: str, user: str, password: str, host: str, rest: str
) -> None:
    url = f"{scheme}{USER_NEEDLE}{user}:{PASSWORD_NEEDLE}{password}@{host}{rest}"
    try:
        proxy = ProxyUrl.parse(url)
    except ValueError as exc:
        assert USER_NEEDLE not in str(exc) and PASSWORD_NEEDLE not in str(exc)
        return
    assert USER_NEEDLE not in str(proxy) and PASSWORD_NEEDLE not in repr(proxy)
    assert ProxyUrl.parse(proxy.reveal()) == proxy  # what aiohttp is given means the same
    assert 1 <= proxy.port <= 65535 and proxy.host


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("a\x00\nb" + string.whitespace, "a b"),
        ("Pop\x9b31m-ups", "Pop 31m-ups"),  # a C1 control (CSI) is a terminal escape too
        ("SMS\u2028push", "SMS push"),
        ("\x00\x9b\u2028", None),  # nothing printable left: refused like a missing name
    ],
)
def test_source_names_are_cleaned_or_refused(name: str, cleaned: str | None) -> None:
    row = {"impressions": 1, "click": 1, "order": 0, "revenue": 0, "cvr": "0", "ctr": "1"}
    body = encode({"status": "success", "data": [{**row, "source_name": name}]})
    if cleaned is None:
        with pytest.raises(ApiError) as info:
            classify_response(200, body)
        assert info.value.reason is ApiErrorReason.INVALID_RESPONSE
        return
    (parsed,) = classify_response(200, body)
    assert parsed.source_name == cleaned


# -- figures: exact, in range, or refused (through parse_rows, the parser's one entry) ----------

USUAL = {"source_name": "Newsletter", "impressions": 9, "click": 2, "order": 1, "revenue": 5}


def one_row(**fields: object) -> TrafficRow:
    (row,) = parse_rows([{**USUAL, "cvr": "1.00", "ctr": "2.22", **fields}])
    return row


@given(value=st.floats(min_value=0, max_value=MAX_COUNT, allow_nan=False) | st.integers(0, 10**6))
@example(value=1.36)
@example(value=1e-05)
@example(value=100)
def test_a_percent_number_is_its_exact_decimal_shifted(value: float) -> None:
    expected = float(Decimal(repr(float(value))).scaleb(-2))
    assert one_row(ctr=value).ctr_ratio == expected


@given(whole=st.integers(0, 10**6), fraction=st.text("0123456789", min_size=1, max_size=12))
@example(whole=1, fraction="36")
@example(whole=0, fraction="35")
def test_a_percent_text_is_its_exact_decimal_shifted(whole: int, fraction: str) -> None:
    text = f"{whole}.{fraction}"
    expected = float(Decimal(text).scaleb(-2))  # rounded once, from the text's exact value
    assert one_row(cvr=text).cvr_ratio == expected
    assert one_row(cvr=text + "%").cvr_ratio == expected


@given(value=st.integers(-(10**16), 10**16))
def test_whole_numbers_in_range_or_refused(value: int) -> None:
    if 0 <= value <= MAX_COUNT:
        assert one_row(click=value).clicks == value
        assert one_row(revenue=value).revenue == float(value)
        return
    for field in ("click", "revenue"):
        with pytest.raises(ValueError, match=f"data\\[0\\] \\(Newsletter\\): field '{field}' is"):
            one_row(**{field: value})


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"click": True}, "'click' is boolean"),
        ({"revenue": False}, "'revenue' is boolean"),
        ({"order": 1.5}, "field 'order' is not a whole number: 1.5"),
        ({"impressions": "7.00"}, None),  # whole-number text is accepted
        ({"ctr": "-1.00"}, "field 'ctr' is not a number: '-1.00'"),
        ({"cvr": None}, "field 'cvr' is missing"),
        ({"source_name": "x" * 101}, None),  # cut to 100 characters and an ellipsis
    ],
)
def test_each_field_is_accepted_or_refused_by_name(
    fields: dict[str, object], problem: str | None
) -> None:
    if problem is None:
        one_row(**fields)
        return
    with pytest.raises(ValueError, match=re.escape(problem)):
        one_row(**fields)


def test_a_source_name_twice_is_refused_after_cleaning() -> None:
    twice = [
        {**USUAL, "cvr": "1", "ctr": "1", "source_name": n} for n in ("Newsletter", " Newsletter")
    ]
    with pytest.raises(ValueError, match="source_name 'Newsletter' appears twice"):
        parse_rows(twice)


@given(text=st.text(max_size=40), limit=st.integers(1, 30))
@example(text=" Newsletter ", limit=20)
@example(text="a\u009bb", limit=5)
def test_safe_text_is_printable_single_line_and_bounded(text: str, limit: int) -> None:
    cleaned = traffic.safe_text(text, limit)
    assert cleaned.isprintable() and len(cleaned) <= limit + 1
    if not cleaned.endswith("…"):
        assert cleaned == cleaned.strip()
    if text.isprintable() and len(text.strip()) <= limit:
        assert cleaned == text.strip()  # clean text comes through as it is, trimmed
