"""The package's structure, as ARCHITECTURE.md describes it.

- every SQL statement on facevec's tables is in the storage layer;
- no module of the package imports the ``facevec`` facade;
- imports run down the layers (cli -> web -> use cases -> engine / storage / bindings ->
  vocabulary), with no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facevec"

# Modules every layer may use: the package's vocabulary.
VOCABULARY = {
    "facevec._version",
    "facevec.errors",
    "facevec.metrics",
    "facevec.options",
    "facevec.face",
    "facevec.parameters",
    "facevec.vectors",
}
# Which first-level parts each part may import (besides the vocabulary and itself).
ALLOWED = {
    "bindings": set(),
    "storage": {"bindings"},
    "engine": set(),
    "use case": {"bindings", "storage", "engine", "use case"},
    # The web server is a top layer like the command line; only the CLI starts it.
    "web": {"bindings", "storage", "engine", "use case", "web"},
    "cli": {"bindings", "storage", "engine", "use case", "web", "cli"},
    "facade": {"bindings", "use case"},
}
LAYERED = {"bindings", "storage", "engine", "web", "cli"}

SQL_VERB = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|REPLACE)\b")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    assert len(found) > 20, found  # the walk found the package
    return found


def part_of(name: str) -> str:
    if name in VOCABULARY:
        return "vocabulary"
    if name == "facevec":
        return "facade"
    if name == "facevec.__main__":  # python -m facevec runs the command line
        return "cli"
    second = name.split(".")[1]
    return second if second in LAYERED else "use case"


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """facevec modules that `name` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("facevec"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("facevec"):
                continue
            for alias in node.names:
                # `from . import knn` imports the module facevec.knn, not the facade.
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return found


def table_names() -> set[str]:
    """Tables and views that facevec creates (read from the storage layer's DDL)."""
    text = "\n".join(p.read_text() for p in (PACKAGE / "storage").glob("*.py"))
    names = set(re.findall(r"CREATE (?:TABLE|VIEW) (?:IF NOT EXISTS )?(\w+)", text))
    names |= {"facevec_knn_index"}  # written by csrc/knn.c
    assert {"face_meta", "face_embeddings", "ingest_ledger", "facevec_collection"} <= names
    return names


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each string literal, f-strings joined into one text."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def test_sql_on_facevec_tables_is_only_in_the_storage_layer():
    tables = re.compile(r"\b(" + "|".join(sorted(table_names())) + r")\b")
    offenders = []
    for name, path in modules().items():
        if part_of(name) == "storage":
            continue
        for line, text in sql_strings(path):
            if SQL_VERB.search(text) and tables.search(text):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:60]!r}")
    assert offenders == []


def test_the_check_finds_sql_where_it_is():
    storage_hits = [
        text
        for path in (PACKAGE / "storage").glob("*.py")
        for _, text in sql_strings(path)
        if SQL_VERB.search(text) and "face_meta" in text
    ]
    assert len(storage_hits) > 5


def test_no_module_imports_the_facade():
    known = set(modules())
    offenders = [
        name
        for name, path in modules().items()
        if name != "facevec" and "facevec" in imported_modules(name, path, known)
    ]
    assert offenders == []


def test_imports_run_down_the_layers():
    known = set(modules())
    offenders = []
    for name, path in modules().items():
        part = part_of(name)
        for target in imported_modules(name, path, known):
            target_part = part_of(target)
            if target_part in ("vocabulary", part):
                continue
            if part == "vocabulary" or target_part not in ALLOWED[part]:
                offenders.append(f"{name} ({part}) imports {target} ({target_part})")
    assert offenders == []


def test_no_import_cycle():
    known = set(modules())
    graph = {
        name: {t for t in imported_modules(name, path, known) if t in known and t != name}
        for name, path in modules().items()
    }
    # A package's __init__ importing its own modules is not a cycle of layers.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node) :] + [node])
            return
        visiting.add(node)
        for target in sorted(graph[node]):
            visit(target, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert cycles == []
