"""Finding the external programs some tests need (promtool, prometheus, chromium, node, ...).

Locally a missing tool skips the test with a clear reason; under ``CI=true`` it fails the test,
so a CI run can never go green by silently skipping the real-component checks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.harness import free_port, free_ports

__all__ = ["REPO", "free_port", "free_ports", "in_ci", "missing", "require_tool"]

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
