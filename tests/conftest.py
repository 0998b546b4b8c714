"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

# Make `tests.tooling` importable as `tooling` from every test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
