"""The pytest plugin's configuration mistakes fail the test with what to change, and its
clean-up survives a database that is already gone."""

from __future__ import annotations

from pathlib import Path

import pytest

NEEDS_IT = "def test_needs_it(isolated_db):\n    pass\n"

MODELS = """
import os

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_uow import Database


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "plugin_error_notes"

    id: Mapped[int] = mapped_column(primary_key=True)


db = Database(os.environ["INNER_DATABASE_URL"], metadata=Base.metadata)
bare = Database(os.environ["INNER_DATABASE_URL"])
"""


def _suite(pytester: pytest.Pytester, ini: str, tests: str = NEEDS_IT) -> None:
    pytester.makeini(f"[pytest]\npythonpath = .\nfilterwarnings = error\n{ini}")
    pytester.mkpydir("myapp")
    pytester.makepyfile(**{"myapp/models": MODELS})
    pytester.makepyfile(test_it=tests)


@pytest.mark.parametrize("path", ["myapp.models", "myapp.models:", ":db"])
def test_a_database_path_without_module_and_attribute_says_how_to_write_it(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("INNER_DATABASE_URL", f"sqlite:///{tmp_path / 'inner.db'}")
    _suite(pytester, f"flask_uow_database = {path}\n")

    result = pytester.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*flask_uow_database = '{path}' must be 'module:attribute'*"])


@pytest.mark.parametrize("path", ["myapp.nowhere:db", "myapp.models:nothing", "myapp.models:db.x"])
def test_a_database_path_that_does_not_import_says_how_to_make_it_importable(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("INNER_DATABASE_URL", f"sqlite:///{tmp_path / 'inner.db'}")
    _suite(pytester, f"flask_uow_database = {path}\n")

    result = pytester.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"*flask_uow_database = '{path}' could not be imported*Make it importable*"]
    )


def test_a_database_without_metadata_asks_for_it_or_for_create_all_off(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER_DATABASE_URL", f"sqlite:///{tmp_path / 'inner.db'}")
    _suite(pytester, "flask_uow_database = myapp.models:bare\n")

    result = pytester.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pass metadata=Base.metadata to Database()*"])


def test_create_all_off_creates_no_table_and_isolates_all_the_same(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INNER_DATABASE_URL", f"sqlite:///{tmp_path / 'inner.db'}")
    _suite(
        pytester,
        "flask_uow_database = myapp.models:bare\nflask_uow_create_all = false\n",
        """
import sqlalchemy as sa


def test_runs_without_tables(isolated_db):
    with isolated_db.unit_of_work(read_only=True):
        tables = sa.inspect(isolated_db.session.connection()).get_table_names()
    assert tables == []
""",
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_tables_of_a_database_removed_during_the_session_are_not_dropped_again(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "removed"
    folder.mkdir()
    monkeypatch.setenv("INNER_DATABASE_URL", f"sqlite:///{folder / 'inner.db'}")
    _suite(
        pytester,
        "flask_uow_database = myapp.models:db\n",
        f"""
import shutil


def test_gets_its_tables_created(isolated_db):
    pass


def test_then_removes_the_whole_database(request):
    db = request.getfixturevalue("uow_database")
    db.dispose()
    shutil.rmtree({str(folder)!r})
""",
    )

    result = pytester.runpytest()

    result.assert_outcomes(passed=2)
    assert not folder.exists()
