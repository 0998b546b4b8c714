"""Which event loop the commands run on: uvloop where it is installed, else asyncio's own.

uvloop is a drop-in replacement written in Cython on libuv; with aiohttp's client it still
costs less CPU per API request than asyncio's loop (docs/benchmarks.md, "Event loop").
``RETARGETING_EXPORTER_EVENT_LOOP=asyncio`` falls back to asyncio's loop (for troubleshooting).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "RETARGETING_EXPORTER_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not installed (it has no Windows build): asyncio's loop is fine
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Like ``asyncio.run``, on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
