"""The repository stands alone: no code, test, benchmark or script reads a path outside it.

Users clone this repository by itself, so a file that reaches above the repository root (the
vendor's fixtures once came from a folder beside the clone) fails in every clone but the one it was
written in.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tooling import REPO

CHECKED = ("exporter", "tests", "bench", "scripts", ".ci")
SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".toml", ".json", ".cfg", ".ini", ""}
# parents[N] of a file N+1 folders deep (or more) is above the repository.
PARENTS = re.compile(r"\bparents\[(\d+)\]")
# A relative path that climbs: "../x", "../../x", "$(dirname "$0")/..".
CLIMB = re.compile(r"(?<![\w.])(\.\.(?:[/\\]\.\.)*)(?![\w.])")
# Absolute places that exist only on a developer's machine.
ABSOLUTE = re.compile(r"(/work/|\bshared/fixtures\b|/shared/)")
# A line that climbs from a generated folder deeper than its file says so with this comment.
EXEMPT = "# path inside the repository"


def _depth(path: Path) -> int:
    """Folders between the repository root and ``path`` (tests/x.py: 1)."""
    return len(path.relative_to(REPO).parts) - 1


def problems_in(path: Path, text: str) -> list[str]:
    """Every reference in ``text`` (the contents of ``path``) to a place above the repository."""
    depth = _depth(path)
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path.relative_to(REPO)}:{number}"
        if EXEMPT in line:
            continue
        for match in PARENTS.finditer(line):
            if int(match.group(1)) > depth:
                found.append(f"{where}: {match.group(0)} is above the repository root")
        for match in CLIMB.finditer(line):
            # Counted from the file's own folder (scripts cd there first).
            if match.group(1).count("..") > depth:
                found.append(f"{where}: {match.group(1)!r} climbs above the repository root")
        if ABSOLUTE.search(line):
            found.append(f"{where}: names a path outside the repository: {line.strip()[:80]}")
    return found


def checked_files() -> list[Path]:
    files = []
    for top in CHECKED:
        for path in sorted((REPO / top).rglob("*")):
            if (
                path.is_file()
                and path.suffix in SUFFIXES
                and "node_modules" not in path.parts
                and "__pycache__" not in path.parts
                and path.resolve() != Path(__file__).resolve()
            ):
                files.append(path)
    return files


def test_nothing_reads_a_path_above_the_repository() -> None:
    files = checked_files()
    assert any(p.name == "test_client.py" for p in files)  # the walk really covers tests/
    problems = [p for path in files for p in problems_in(path, path.read_text(errors="replace"))]
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/test_x.py", 'FIXTURES = Path(__file__).parents[2] / "beside" / "fixtures"'),
        ("tests/test_x.py", 'FIXTURES = Path(__file__).parent / "../../beside/fixtures"'),
        ("exporter/x.py", 'data = open("../../outside.json")'),
        ("scripts/x", 'cd "$(dirname "$0")/../.."'),
        ("bench/x.py", 'ROOT = Path(__file__).parents[2] / "data"'),
        ("tests/test_x.py", 'FIXTURES = Path("/work/shared/fixtures")'),
    ],
)
def test_the_guard_catches_a_path_above_the_repository(relative: str, line: str) -> None:
    assert problems_in(REPO / relative, line)


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/test_x.py", 'FIXTURES = Path(__file__).resolve().parent / "fixtures"'),
        ("tests/test_x.py", "REPO = Path(__file__).resolve().parents[1]"),
        ("scripts/x", 'cd "$(dirname "$0")/.."'),
        ("exporter/fakeapi/x.py", 'HERE = Path(__file__).parents[1] / "demo.yaml"'),
    ],
)
def test_the_guard_allows_paths_inside_the_repository(relative: str, line: str) -> None:
    assert problems_in(REPO / relative, line) == []
