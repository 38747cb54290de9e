"""The package's import graph: acyclic, with a core that never imports a web framework.

The graph is read from the source with ``ast``: an edge ``a -> b`` means that
``flask_uow.a`` imports ``flask_uow.b`` anywhere, at module level or inside a function
(which imports it when called); only imports under ``if TYPE_CHECKING:`` are left out.
The pytest plugin's own test reads the imports run when a module is loaded.
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

FRAMEWORK_LAYER_PREFIXES = ("_flask", "_cli", "_quart")
"""Modules named like these are the framework layer (Flask and Quart): they may import the
frameworks. The core reaches them only through ``_frameworks`` (entry points)."""

OTHER_FRAMEWORK_MODULES: frozenset[str] = frozenset({"debugtoolbar"})
"""Framework-layer modules whose names do not say so; add one here only with a reason.

``debugtoolbar``: a panel for Flask-DebugToolbar."""

FRAMEWORK_PACKAGES = ("flask", "werkzeug", "quart", "click")
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


def _all_statements(node: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``node``, function bodies included, but not ``if TYPE_CHECKING:``
    blocks (their ``else:`` is included)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield statement
                yield from _all_statements(statement)
            continue
        yield child
        yield from _all_statements(child)


def imported_names(module: str, source: str, *, when_loaded: bool = False) -> set[str]:
    """Absolute names of the modules ``module`` imports: anywhere (the default), or only
    when it is loaded (``when_loaded``: not inside functions)."""
    names: set[str] = set()
    package_parts = [PACKAGE]  # every module of flask_uow sits directly in the package
    tree = ast.parse(source)
    nodes = _runtime_statements(tree.body) if when_loaded else _all_statements(tree)
    for statement in nodes:
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


def package_graph(*, when_loaded: bool = False) -> dict[str, set[str]]:
    """Module (short name, such as "_unit") -> the package's modules it imports."""
    modules = {path.stem: path for path in SOURCE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        imported = imported_names(name, source, when_loaded=when_loaded)
        graph[name] = {
            target.removeprefix(f"{PACKAGE}.")
            for target in imported
            if target.startswith(f"{PACKAGE}.") and target.removeprefix(f"{PACKAGE}.") in modules
        } - {name}
    return graph


def external_imports(*, when_loaded: bool = False) -> dict[str, set[str]]:
    """Module (short name) -> top-level names of outside packages it imports."""
    return {
        path.stem: {
            name.partition(".")[0]
            for name in imported_names(
                path.stem, path.read_text(encoding="utf-8"), when_loaded=when_loaded
            )
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


def in_framework_layer(module: str) -> bool:
    return module.startswith(FRAMEWORK_LAYER_PREFIXES) or module in OTHER_FRAMEWORK_MODULES


def core_modules() -> list[str]:
    return sorted(module for module in package_graph() if not in_framework_layer(module))


def test_the_graph_reader_sees_imports_inside_functions_and_skips_type_checking_ones() -> None:
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
    loaded = imported_names("_x", source, when_loaded=True)

    assert {"flask_uow._a", "flask_uow._b", "flask_uow._c", "sqlalchemy"} <= names
    assert "flask_uow._e" in names and "flask_uow._e" not in loaded
    assert "flask_uow._d" not in names | loaded
    assert loaded <= names


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


def test_the_core_and_the_framework_layer_both_have_modules() -> None:
    layer = sorted(module for module in package_graph() if in_framework_layer(module))

    assert {"_database", "_query", "_frameworks", "testing", "pytest_plugin"} <= set(core_modules())
    assert {"_flask", "_quart", "_cli", "_flask_layer"} <= set(layer)


@pytest.mark.parametrize("module", core_modules())
def test_a_core_module_imports_no_framework_nor_the_framework_layer(module: str) -> None:
    layer = sorted(target for target in package_graph()[module] if in_framework_layer(target))
    outside = sorted(external_imports()[module] & set(FRAMEWORK_PACKAGES))

    assert layer == [], f"{module} imports the framework layer: {layer}"
    assert outside == [], f"{module} imports {outside}"


def test_the_pytest_plugin_imports_only_pytest_and_the_standard_library_when_loaded() -> None:
    """pytest loads the plugin in every session wherever flask-uow is installed."""
    allowed = {"pytest", "__future__", *sys.stdlib_module_names}

    assert external_imports(when_loaded=True)["pytest_plugin"] - allowed == set()
    assert package_graph(when_loaded=True)["pytest_plugin"] == set()


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
        or (
            name.startswith(f"{PACKAGE}.")
            # The package's own lazy attributes: importlib only, no core module.
            and name not in (f"{PACKAGE}.pytest_plugin", f"{PACKAGE}._lazy")
        )
    ]
    assert costly == [], f"loading the plugin imported {costly}"


def runtime_slot_assignments(module: str, source: str) -> list[str]:
    """``runtime.<slot> = ...`` statements of ``module`` (any expression ending in a name
    or attribute called ``runtime`` or ``_runtime``), as ``module:line``."""
    from flask_uow._runtime import Runtime

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AugAssign | ast.AnnAssign)
            else []
        )
        for target in targets:
            if not (isinstance(target, ast.Attribute) and target.attr in Runtime.__slots__):
                continue
            owner = target.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("runtime", "_runtime"):
                found.append(f"{module}:{node.lineno}")
    return found


def test_the_reader_of_runtime_slot_assignments_finds_them() -> None:
    source = "db.runtime.isolation = None\nself._runtime.replicas = r\nother.scope = 1\n"

    assert runtime_slot_assignments("_x", source) == ["_x:1", "_x:2"]


def test_only_the_runtime_and_the_database_assign_runtime_slots() -> None:
    outside = [
        found
        for path in sorted(SOURCE.glob("*.py"))
        if path.stem not in ("_runtime", "_database")
        for found in runtime_slot_assignments(path.stem, path.read_text(encoding="utf-8"))
    ]

    assert outside == [], f"Runtime slots assigned outside _runtime and _database: {outside}"
