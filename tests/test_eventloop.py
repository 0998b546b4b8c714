"""The commands run on uvloop where installed (a dependency on Linux), or on asyncio's loop."""

from __future__ import annotations

import asyncio

import pytest

from exporter import eventloop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(loop_module()).startswith("uvloop")


@pytest.mark.parametrize("value", ["asyncio", " AsyncIO "])
def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(eventloop.ENV, value)
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(loop_module()).startswith("asyncio")
