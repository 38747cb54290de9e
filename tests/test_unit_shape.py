"""The shape of the unit of work: few fields, shared state in one record, one way to change state.

These read the source (``ast``) and the class, not a database: what they guard is how the
modules of the unit talk to each other, which no behaviour test can see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import flask_uow
from flask_uow import UnitOfWork

PACKAGE = Path(flask_uow.__file__).parent

UNIT_MODULES = sorted(
    {
        *PACKAGE.glob("_unit*.py"),
        PACKAGE / "_async_unit.py",
        PACKAGE / "_transaction.py",
        PACKAGE / "_ending.py",
        PACKAGE / "_lifecycle.py",
    }
)
"""The modules of the unit of work: its class, its halves, its record and its state machine."""

MAX_UNIT_SLOTS = 15


def all_slots(cls: type) -> list[str]:
    return [slot for klass in cls.__mro__ for slot in klass.__dict__.get("__slots__", ())]


def assigned_attributes(tree: ast.AST) -> list[tuple[ast.Attribute, str]]:
    """Every ``x.y`` assigned to (``=``, ``+=``, annotated, in tuples), with its function."""
    found: list[tuple[ast.Attribute, str]] = []

    def targets_of(node: ast.AST) -> list[ast.expr]:
        if isinstance(node, ast.Assign):
            return list(node.targets)
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            return [node.target]
        return []

    def flatten(target: ast.expr) -> list[ast.expr]:
        if isinstance(target, ast.Tuple | ast.List):
            return [leaf for element in target.elts for leaf in flatten(element)]
        if isinstance(target, ast.Starred):
            return flatten(target.value)
        return [target]

    def visit(node: ast.AST, function: str) -> None:
        for target in targets_of(node):
            for leaf in flatten(target):
                if isinstance(leaf, ast.Attribute):
                    found.append((leaf, function))
        for child in ast.iter_child_nodes(node):
            name = (
                child.name
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                else function
            )
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_the_unit_modules_are_all_found() -> None:
    names = {path.name for path in UNIT_MODULES}
    assert {"_unit.py", "_unit_entering.py", "_unit_ending.py", "_transaction.py"} <= names
    assert all(path.is_file() for path in UNIT_MODULES)


def test_a_unit_of_work_keeps_at_most_15_slots_and_no_instance_dict() -> None:
    slots = all_slots(UnitOfWork)
    assert len(slots) == len(set(slots)), f"a slot is declared twice: {sorted(slots)}"
    assert len(slots) <= MAX_UNIT_SLOTS, f"UnitOfWork has {len(slots)} slots: {slots}"
    assert "__dict__" not in slots
    assert not hasattr(UnitOfWork.__new__(UnitOfWork), "__dict__")


def test_no_unit_module_assigns_another_objects_underscored_attribute() -> None:
    offences = []
    for path in UNIT_MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for attribute, function in assigned_attributes(tree):
            name = attribute.attr
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                continue
            owner = attribute.value
            if isinstance(owner, ast.Name) and owner.id == "self":
                continue
            offences.append(
                f"{path.name}:{attribute.lineno} in {function}: {ast.unparse(attribute)} = ..."
            )
    assert offences == [], "units write each other's state instead of calling a method:\n" + (
        "\n".join(offences)
    )


def test_a_units_state_changes_only_in_its_transition_function() -> None:
    writers = []
    for path in UNIT_MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for attribute, function in assigned_attributes(tree):
            if attribute.attr == "_state":
                writers.append((path.name, function))
    # __init__ sets the first state (NEW); every later change is a checked move.
    assert sorted(set(writers)) == [("_unit.py", "__init__"), ("_unit_fields.py", "_move_to")]


def test_the_assignment_finder_sees_every_form_of_assignment() -> None:
    tree = ast.parse(
        "def f(self, other):\n"
        "    other._a = 1\n"
        "    other._b += (1,)\n"
        "    x, other._c = 1, 2\n"
        "    other._d: int = 1\n"
        "    self._e = other._f = 3\n"
    )
    names = sorted(attribute.attr for attribute, function in assigned_attributes(tree))
    assert names == ["_a", "_b", "_c", "_d", "_e", "_f"]
    assert {function for _, function in assigned_attributes(tree)} == {"f"}
