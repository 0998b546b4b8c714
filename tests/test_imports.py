"""Imports between the modules of ``exporter/`` go one way: no cycle, not even through an import
inside a function (such a cycle only works by luck of timing, and hides which module depends on
which)."""

from __future__ import annotations

import ast
from pathlib import Path

from tooling import REPO

PACKAGE = "exporter"


def module_name(path: Path, root: Path) -> str:
    """``root/exporter/backfill/plan.py`` → ``exporter.backfill.plan`` (``__init__`` → package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` (module ``name``) imports, at any depth.

    ``from a.b import c`` names module ``a.b.c`` if there is one, else ``a.b``. A parent
    package that Python initialises on the way is not counted: its ``__init__`` re-exporting
    its submodules is the usual layout, not a cycle.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is this package, 2 its parent, ...
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return (found & modules) - {name}


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module → the modules of the same package it imports (module level or in functions)."""
    paths = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = set(paths)
    return {name: imported_modules(path, name, modules) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when imports go one way."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> list[str] | None:
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        stack.pop()
        on_stack.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle is not None:
                return cycle
    return None


def test_no_import_cycle_in_the_exporter() -> None:
    graph = import_graph(REPO)
    assert "exporter.cli" in graph and "exporter.flags" in graph["exporter.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "exporter/__init__.py": "",
            "exporter/cli.py": "from exporter.flags import UsageError\n\n"
            "def main():\n    from exporter import backfill\n    return backfill.main()\n",
            "exporter/flags.py": "class UsageError(Exception):\n    pass\n",
            "exporter/backfill/__init__.py": "from exporter.backfill.command import main\n",
            "exporter/backfill/command.py": "from exporter.cli import UsageError\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle == [
        "exporter.backfill",
        "exporter.backfill.command",
        "exporter.cli",
        "exporter.backfill",
    ]


def test_relative_imports_and_plain_imports_count(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "exporter/__init__.py": "",
            "exporter/a.py": "import exporter.b\n",
            "exporter/b.py": "def f():\n    from . import a\n",
        },
    )
    assert find_cycle(import_graph(root)) == ["exporter.a", "exporter.b", "exporter.a"]


def test_a_package_re_exporting_its_modules_is_no_cycle(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "exporter/__init__.py": "",
            "exporter/flags.py": "X = 1\n",
            "exporter/backfill/__init__.py": "from exporter.backfill.command import main\n",
            "exporter/backfill/plan.py": "from exporter.flags import X\n",
            "exporter/backfill/command.py": "from exporter.backfill.plan import X\n"
            "from exporter.backfill import plan\n\ndef main():\n    return plan.X\n",
        },
    )
    graph = import_graph(root)
    assert graph["exporter.backfill.command"] == {"exporter.backfill.plan"}
    assert find_cycle(graph) is None
