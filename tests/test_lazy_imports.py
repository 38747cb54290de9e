"""Importing flask_uow, or loading its pytest plugin, costs nothing until a name is used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_loading_the_pytest_plugin_imports_neither_sqlalchemy_nor_the_core() -> None:
    modules = imported_after("import flask_uow.pytest_plugin")
    assert "sqlalchemy" not in modules
    assert "flask_uow._database" not in modules


def test_importing_the_package_imports_nothing_else() -> None:
    modules = imported_after("import flask_uow")
    assert not {"sqlalchemy", "flask", "flask_uow._database"} & modules


@pytest.mark.parametrize("name", ["Database", "UnitOfWork", "is_transient", "SessionProxy"])
def test_using_a_core_name_never_imports_flask(name: str) -> None:
    modules = imported_after(f"import flask_uow; flask_uow.{name}")
    assert "flask" not in modules
    assert "werkzeug" not in modules


def test_an_unknown_name_raises_attribute_error() -> None:
    import flask_uow

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        flask_uow.Nope  # noqa: B018
