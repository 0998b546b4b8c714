"""The log redactor: every known key scrubbed, longest match first, at any number of keys."""

from __future__ import annotations

import pytest

from exporter.logs import REDACTED, Redactor


@pytest.mark.parametrize(
    ("secrets", "text", "expected"),
    [
        ((), "nothing to hide", "nothing to hide"),
        (("k3y",), "", ""),
        (("k3y",), "k3y", REDACTED),
        (("k3y",), "a=k3y b=k3y", f"a={REDACTED} b={REDACTED}"),
        (("k3y",), "k3yk3y", REDACTED * 2),
        (("k3y",), "K3Y k3 3y", "K3Y k3 3y"),
        (("abc", "abcdef"), "x abcdef y abc", f"x {REDACTED} y {REDACTED}"),
        (("abcdef", "abc"), "abcdefabc", REDACTED * 2),
        (("", "k"), "a key", f"a {REDACTED}ey"),
        (("ключ",), "url?rest_key=ключ&x=1", f"url?rest_key={REDACTED}&x=1"),
    ],
)
def test_scrub(secrets: tuple[str, ...], text: str, expected: str) -> None:
    assert Redactor(secrets).scrub(text) == expected


def test_ten_thousand_keys_every_one_found() -> None:
    keys = [f"key-{i:05d}-{i * 7919 % 10007:05d}" for i in range(10_000)]
    redactor = Redactor(keys)
    for key in keys[::997]:
        line = f'msg="request failed" url="https://api/?rest_key={key}&date_from=1"'
        assert key not in redactor.scrub(line)
        assert REDACTED in redactor.scrub(line)


def test_update_replaces_the_keys() -> None:
    redactor = Redactor(["old-key"])
    redactor.update(["new-key"])
    assert redactor.scrub("old-key new-key") == f"old-key {REDACTED}"
