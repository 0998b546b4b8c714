"""The daemon tunes the garbage collector for thousands of accounts (see docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

from tooling import REPO

from exporter.cli import GC_YOUNG_THRESHOLD


def test_young_threshold_raised_and_start_up_objects_frozen() -> None:
    # In a child process: the settings are process-wide and must not leak into the test run.
    code = (
        "import gc; from exporter import cli; default = gc.get_threshold(); cli._tune_gc(); "
        "print(*gc.get_threshold(), *default, gc.get_freeze_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    young, middle, old, _, default_middle, default_old, frozen = map(int, out)
    assert young == GC_YOUNG_THRESHOLD > 700
    assert (middle, old) == (default_middle, default_old)
    assert frozen > 10_000  # the modules, classes and functions loaded so far
