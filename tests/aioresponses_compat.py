"""Test-only compatibility shim for aioresponses 0.7.9 with aiohttp >= 3.14.

aioresponses builds ``ClientResponse`` objects itself, without the keyword-only
``stream_writer`` argument that aiohttp 3.14 added (upstream issue pnuckowski/aioresponses#289).
aiohttp 3.14 carries a security fix, so we do not pin aiohttp down for users; instead the tests
hand aioresponses a ``ClientResponse`` subclass that supplies a finished, empty writer. The shim
switches itself off when aioresponses no longer needs it (when ``stream_writer`` is gone from
the signature or aioresponses passes it), so it can be deleted once upstream is fixed.
"""

from __future__ import annotations

import inspect
from typing import Any

import aioresponses.core as aioresponses_core
from aiohttp import ClientResponse
from aioresponses import aioresponses


class _FinishedWriter:
    """What a response needs of its request's writer once the request was sent: its size."""

    output_size = 0


class CompatClientResponse(ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _FinishedWriter())
        super().__init__(method, url, **kwargs)


def _needs_shim() -> bool:
    params = inspect.signature(ClientResponse.__init__).parameters
    return "stream_writer" in params and params["stream_writer"].default is inspect.Parameter.empty


def mocked_responses(**kwargs: Any) -> aioresponses:
    """``aioresponses(...)``, working on aiohttp 3.14."""
    if _needs_shim():
        aioresponses_core.ClientResponse = CompatClientResponse  # type: ignore[misc]
    return aioresponses(**kwargs)
