"""The floors of the package, checked from the source: no module imports a
higher floor, and no two modules import each other.

Floors, bottom up (docs/architecture.md): errors and strict_json; domain;
schema, db and embeddings; repositories; infrastructure (the services);
integrations and cli. Every import counts, including those under
``TYPE_CHECKING`` and inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "abathur"
FLOORS: tuple[tuple[str, ...], ...] = (
    ("abathur.errors", "abathur.strict_json"),
    ("abathur.domain",),
    ("abathur.schema", "abathur.db", "abathur.embeddings"),
    ("abathur.repositories",),
    ("abathur.infrastructure",),
    ("abathur.integrations", "abathur.cli", "abathur"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(module: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matched room, floor)
    for number, rooms in enumerate(FLOORS):
        for room in rooms:
            inside = module == room or module.startswith(room + ".")
            if inside and (best is None or len(room) > best[0]):
                best = (len(room), number)
    assert best is not None, f"{module} is on no floor: add its room to FLOORS"
    return best[1]


def imports_of(path: Path, name: str) -> set[str]:
    """Every abathur module ``path`` imports (``from x import y`` counts as x.y
    when x.y is a module of the package, else as x)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("abathur"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("abathur"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    found.discard(name)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path, name) for name, path in MODULES.items()}


def test_every_module_is_on_a_floor() -> None:
    for name in MODULES:
        floor(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_higher_floor(name: str) -> None:
    upward = sorted(t for t in GRAPH[name] if floor(t) > floor(name))
    assert not upward, f"{name} (floor {floor(name)}) imports a higher floor: {upward}"


def test_no_two_modules_import_each_other() -> None:
    pairs = sorted(
        (a, b) for a, targets in GRAPH.items() for b in targets if a < b and a in GRAPH.get(b, ())
    )
    assert not pairs, f"modules that import each other: {pairs}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """A canary: the same parser finds an import of a service in the domain."""
    source = tmp_path / "canary.py"
    source.write_text("from abathur.infrastructure.database import Database\n")
    targets = imports_of(source, "abathur.domain.canary")
    assert any(floor(t) > floor("abathur.domain.canary") for t in targets)


def test_frameworks_are_imported_only_by_their_integration() -> None:
    frameworks = ("google.adk", "langgraph", "langchain")
    for name, path in MODULES.items():
        if name.startswith("abathur.integrations"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for imported in names:
                assert not imported.startswith(frameworks), f"{name} imports {imported}"
