"""The package's import graph: acyclic, with a core that never imports Flask.

The graph is read from the source with ``ast``: an edge ``a -> b`` means that importing
``flask_uow.a`` runs ``import flask_uow.b`` (at module level, outside ``if TYPE_CHECKING:``).
Imports inside functions run only when called, so they create no edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import flask_uow

PACKAGE = "flask_uow"
SOURCE = Path(flask_uow.__file__).parent

FLASK_ONLY_PREFIXES = ("_flask", "_cli")
"""Modules named like these are the Flask layer: they may import Flask, click and Werkzeug."""

OTHER_FLASK_ONLY_MODULES: frozenset[str] = frozenset({"_quart", "debugtoolbar"})
"""Flask-only modules whose names do not say so; add one here only with a reason.

``_quart``: Quart is built on Flask, and its integration reuses the Flask layer's.
``debugtoolbar``: a panel for Flask-DebugToolbar."""

FLASK_PACKAGES = ("flask", "werkzeug", "click")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when the module is imported: not in functions, classes' methods or
    ``if TYPE_CHECKING:`` blocks (their ``else:`` does run)."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                yield from _runtime_statements(statement.body)
            yield from _runtime_statements(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from _runtime_statements(block)
            for handler in statement.handlers:
                yield from _runtime_statements(handler.body)
        elif isinstance(statement, ast.With | ast.ClassDef):
            yield from _runtime_statements(statement.body)


def imported_names(module: str, source: str) -> set[str]:
    """Absolute names of the modules ``module`` imports when it is imported."""
    names: set[str] = set()
    package_parts = [PACKAGE]  # every module of flask_uow sits directly in the package
    for statement in _runtime_statements(ast.parse(source).body):
        if isinstance(statement, ast.Import):
            names.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            if statement.level:
                base = ".".join(package_parts[: len(package_parts) - statement.level + 1])
                target = f"{base}.{statement.module}" if statement.module else base
            else:
                target = statement.module or ""
            names.add(target)
            # "from . import _unit" imports a submodule; "from ._unit import X" does not.
            names.update(f"{target}.{alias.name}" for alias in statement.names)
    return names


def package_graph() -> dict[str, set[str]]:
    """Module (short name, such as "_unit") -> the package's modules it imports at import time."""
    modules = {path.stem: path for path in SOURCE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = imported_names(name, path.read_text(encoding="utf-8"))
        graph[name] = {
            target.removeprefix(f"{PACKAGE}.")
            for target in imported
            if target.startswith(f"{PACKAGE}.") and target.removeprefix(f"{PACKAGE}.") in modules
        } - {name}
    return graph


def external_imports() -> dict[str, set[str]]:
    """Module (short name) -> top-level names of outside packages it imports at import time."""
    return {
        path.stem: {
            name.partition(".")[0]
            for name in imported_names(path.stem, path.read_text(encoding="utf-8"))
            if not name.startswith(PACKAGE)
        }
        for path in SOURCE.glob("*.py")
    }


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def is_flask_only(module: str) -> bool:
    return module.startswith(FLASK_ONLY_PREFIXES) or module in OTHER_FLASK_ONLY_MODULES


def core_modules() -> list[str]:
    return sorted(module for module in package_graph() if not is_flask_only(module))


def test_the_graph_reader_sees_relative_imports_and_skips_type_checking_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _a\n"
        "from ._b import thing\n"
        "import flask_uow._c\n"
        "if TYPE_CHECKING:\n"
        "    from ._d import Hint\n"
        "else:\n"
        "    import sqlalchemy\n"
        "def later():\n"
        "    from ._e import lazy\n"
    )

    names = imported_names("_x", source)

    assert {"flask_uow._a", "flask_uow._b", "flask_uow._c", "sqlalchemy"} <= names
    assert not {"flask_uow._d", "flask_uow._e"} & names


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_covers_every_module_of_the_package() -> None:
    graph = package_graph()

    assert set(graph) == {path.stem for path in SOURCE.glob("*.py")}
    assert {"_unit", "_errors"} <= graph["__init__"] | set().union(*graph.values())


def test_the_package_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(package_graph())

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", core_modules())
def test_a_core_module_imports_neither_flask_nor_the_flask_layer(module: str) -> None:
    flask_layer = sorted(target for target in package_graph()[module] if is_flask_only(target))
    outside = sorted(external_imports()[module] & set(FLASK_PACKAGES))

    assert flask_layer == [], f"{module} imports the Flask layer at import time: {flask_layer}"
    assert outside == [], f"{module} imports {outside} at import time"


def test_the_pytest_plugin_imports_only_pytest_and_the_standard_library_when_loaded() -> None:
    """pytest loads the plugin in every session wherever flask-uow is installed."""
    allowed = {"pytest", "__future__", *sys.stdlib_module_names}

    assert external_imports()["pytest_plugin"] - allowed == set()
    assert package_graph()["pytest_plugin"] == set()


def modules_imported_by(statement: str) -> list[str]:
    """The modules a fresh interpreter imports to run ``statement``, per ``-X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]


def test_importing_flask_uow_imports_no_flask_module() -> None:
    imported = modules_imported_by("import flask_uow")

    assert "flask_uow" in imported
    flask_modules = [name for name in imported if name.partition(".")[0] in FLASK_PACKAGES]
    assert flask_modules == [], f"import flask_uow imported {flask_modules}"


def test_loading_the_pytest_plugin_imports_neither_sqlalchemy_nor_the_core() -> None:
    """pytest loads the plugin in every session wherever flask-uow is installed."""
    imported = modules_imported_by("import flask_uow.pytest_plugin")

    assert "flask_uow.pytest_plugin" in imported
    costly = [
        name
        for name in imported
        if name.partition(".")[0] in ("sqlalchemy", *FLASK_PACKAGES)
        or (name.startswith(f"{PACKAGE}.") and name != f"{PACKAGE}.pytest_plugin")
    ]
    assert costly == [], f"loading the plugin imported {costly}"
