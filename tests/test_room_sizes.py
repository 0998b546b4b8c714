"""Small rooms (issue 15): no module in exporter/ over 600 lines, no class over 250, no function
over 80. A module, class or function past these sizes is doing two jobs: split it where its
reasons to change part, not to please this test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tooling import REPO

MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 600, 250, 80


def oversized(path: Path, text: str) -> list[str]:
    """Every module, class or function of ``text`` over its limit, as ``where: what``."""
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    found = []
    lines = len(text.splitlines())
    if lines > MODULE_LINES:
        found.append(f"{where}: {lines} lines (module limit {MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > limit:
                found.append(f"{where}:{node.lineno} {node.name}: {size} lines (limit {limit})")
    return found


def test_every_room_in_the_exporter_is_small() -> None:
    modules = sorted((REPO / "exporter").rglob("*.py"))
    assert len(modules) > 10
    problems = [p for path in modules for p in oversized(path, path.read_text())]
    assert problems == []


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("x = 1\n" * 601, 1),
        ("def f():\n" + "    x = 1\n" * 80, 1),
        ("def f():\n" + "    x = 1\n" * 79, 0),
        ("class C:\n" + "    x = 1\n" * 250, 1),
        # The class is within its limit; its method is not.
        ("class C:\n    async def f(self):\n" + "        x = 1\n" * 90, 1),
    ],
)
def test_the_limits_are_checked(text: str, count: int, tmp_path: Path) -> None:
    assert len(oversized(tmp_path / "m.py", text)) == count
