"""SQLite done right: foreign keys, savepoints, and writers that wait instead of failing."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation, UnitOfWorkError

from .models import Base, Item, Tag


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'app.db'}", metadata=Base.metadata)
    database.create_all()
    return database


def test_foreign_keys_are_enforced(sqlite_db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"):
        with sqlite_db.unit_of_work():
            sqlite_db.session.add(Tag(item_id=12345, label="orphan"))
    sqlite_db.dispose()


def test_savepoints_roll_back_only_their_own_work(sqlite_db: Database) -> None:
    with sqlite_db.unit_of_work():
        sqlite_db.session.add(Item(name="kept"))
        with pytest.raises(ZeroDivisionError):
            with sqlite_db.unit_of_work(propagation=Propagation.NESTED):
                sqlite_db.session.add(Item(name="undone"))
                sqlite_db.session.flush()
                1 / 0  # noqa: B018
    with sqlite_db.unit_of_work(read_only=True):
        assert sqlite_db.session.scalars(sa.select(Item.name)).all() == ["kept"]
    sqlite_db.dispose()


def _wait_until_inside_a_statement(thread_id: int) -> None:
    """Poll until the thread is inside the driver's execute call (where SQLite's busy wait is)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread_id)
        # flask-uow sends SQLite's BEGIN straight to the driver from its "begin" listener.
        if frame is not None and frame.f_code.co_name == "_sqlite_on_begin":
            return
        time.sleep(0.001)  # poll interval
    raise AssertionError("the second writer never reached its BEGIN IMMEDIATE")


def test_a_second_writer_waits_for_the_first_instead_of_failing(sqlite_db: Database) -> None:
    first_has_written = threading.Event()
    second_writer = threading.get_ident()
    errors: list[BaseException] = []

    def first_writer() -> None:
        try:
            with sqlite_db.unit_of_work():
                sqlite_db.session.add(Item(name="first"))
                sqlite_db.session.flush()
                first_has_written.set()
                # Commit only once the second writer is waiting for the write lock.
                _wait_until_inside_a_statement(second_writer)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=first_writer)
    thread.start()
    assert first_has_written.wait(10)
    with sqlite_db.unit_of_work():
        count = sqlite_db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        sqlite_db.session.add(Item(name="second"))
    thread.join(10)
    assert errors == []
    assert count == 1
    sqlite_db.dispose()


def test_readers_are_not_blocked_by_a_writer(sqlite_db: Database) -> None:
    with sqlite_db.unit_of_work():
        sqlite_db.session.add(Item(name="committed"))
    with sqlite_db.unit_of_work():
        sqlite_db.session.add(Item(name="pending"))
        sqlite_db.session.flush()
        # A blocked reader would fail with "database is locked" after the busy timeout.
        with sqlite_db.unit_of_work(propagation=Propagation.REQUIRES_NEW, read_only=True):
            names = sqlite_db.session.scalars(sa.select(Item.name)).all()
    assert names == ["committed"]
    sqlite_db.dispose()


def test_requires_new_writer_under_a_writing_unit_fails_at_once_with_advice(
    sqlite_db: Database,
) -> None:
    with sqlite_db.unit_of_work():
        sqlite_db.session.add(Item(name="outer"))
        sqlite_db.session.flush()
        with pytest.raises(UnitOfWorkError, match="on_commit hook"):
            with sqlite_db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                pass
    sqlite_db.dispose()


def test_requires_new_writer_is_refused_even_before_the_outer_unit_runs_sql(
    sqlite_db: Database,
) -> None:
    """The rule depends on the units' modes only, never on what the outer unit did so far."""
    with sqlite_db.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="on_commit hook"):
            with sqlite_db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                pass
        sqlite_db.session.add(Item(name="outer"))
    with sqlite_db.unit_of_work(read_only=True):
        names = sorted(sqlite_db.session.scalars(sa.select(Item.name)))
    assert names == ["outer"]
    sqlite_db.dispose()


def test_a_database_file_journals_in_wal_mode_by_default(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.unit_of_work(read_only=True):
        assert db.session.scalar(sa.text("PRAGMA journal_mode")) == "wal"
        assert db.session.scalar(sa.text("PRAGMA synchronous")) == 1  # NORMAL
    db.dispose()


def test_wal_can_be_turned_off_for_a_rollback_journal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'journal.db'}", sqlite_wal=False)
    with db.unit_of_work(read_only=True):
        assert db.session.scalar(sa.text("PRAGMA journal_mode")) == "delete"
    db.dispose()


def test_a_writer_may_start_inside_a_reader_of_the_same_thread_in_wal_mode(
    sqlite_db: Database,
) -> None:
    with sqlite_db.unit_of_work(read_only=True):
        sqlite_db.session.execute(sa.select(sa.func.count()).select_from(Item))
        with sqlite_db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
            sqlite_db.session.add(Item(name="independent"))
    with sqlite_db.unit_of_work(read_only=True):
        assert sqlite_db.session.scalars(sa.select(Item.name)).all() == ["independent"]
    sqlite_db.dispose()


def test_a_writer_inside_a_reader_is_refused_with_a_rollback_journal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'journal.db'}", sqlite_wal=False)
    with db.unit_of_work(read_only=True):
        with pytest.raises(UnitOfWorkError, match="on_commit hook"):
            with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                pass
    db.dispose()
