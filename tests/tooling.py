"""Finding the external programs some tests need (promtool, prometheus, chromium, node, ...).

Locally a missing tool skips the test with a clear reason; under ``CI=true`` it fails the test,
so a CI run can never go green by silently skipping the real-component checks.
"""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where missing tools are failures."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip locally, fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool fails the run; run `bash scripts/test`)")
    pytest.skip(f"{reason}; `bash scripts/test` installs it")


def require_tool(name: str, *candidates: str) -> str:
    """Return the path of program ``name`` (or of the first candidate path that exists)."""
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
        raise AssertionError("unreachable")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` different free ports on 127.0.0.1 (all bound at once while they are chosen:
    one at a time, the kernel may hand out the same port twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A free port on 127.0.0.1 for a server a test starts."""
    return free_ports(1)[0]
