"""The README stays true: its tables list exactly what the code has, its commands exist."""

from __future__ import annotations

import re

from tooling import REPO

from exporter.cli import build_parser
from exporter.errors import ApiErrorReason
from exporter.metrics import METRIC_NAMES

README = (REPO / "README.md").read_text()


def table_first_column(heading: str) -> list[str]:
    """The backticked first cells of the first table after ``heading``."""
    section = README.split(heading, 1)[1]
    rows = []
    started = False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            match = re.match(r"\|\s*`([^`]+)`", line)
            if match:
                rows.append(match.group(1))
        elif started:
            break
    return rows


def test_quick_start_has_exactly_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/demo", "bash scripts/test"]
    assert (REPO / "scripts" / "demo").is_file() and (REPO / "scripts" / "test").is_file()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test" in ci


def test_metrics_table_lists_every_metric() -> None:
    assert set(table_first_column("## Metrics")) == set(METRIC_NAMES)


def test_reasons_table_lists_every_reason() -> None:
    assert table_first_column("### Error reasons") == [r.value for r in ApiErrorReason]


def test_flags_table_lists_every_flag() -> None:
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert set(table_first_column("## Flags")) == flags


def test_contributing_layout_names_every_module() -> None:
    """CONTRIBUTING.md's layout has one line per module or package of exporter/, no more."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    block = text.split("## Layout", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    listed = {
        line.split()[0].removesuffix("/").removesuffix(".py")
        for line in block.splitlines()
        if line.startswith("exporter/")
    }
    package = REPO / "exporter"
    present = {
        f"exporter/{path.name.removesuffix('.py')}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert listed == present
