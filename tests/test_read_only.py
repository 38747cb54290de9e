"""Read-only units never commit, refuse ORM writes, and on servers refuse raw SQL writes too."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation, ReadOnlyViolation

from .conftest import checked_out, committed_names
from .models import Item


def test_flushing_changes_in_a_read_only_unit_raises(db: Database, observer: sa.Engine) -> None:
    with pytest.raises(ReadOnlyViolation, match="read_only=False"):
        with db.unit_of_work(read_only=True):
            db.session.add(Item(name="nope"))
            db.session.flush()
    assert committed_names(observer) == []
    assert checked_out(db) == 0


def test_read_only_unit_ends_with_rollback_and_is_counted_apart_from_commits(
    db: Database,
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="a"))
    statements: list[str] = []
    sa.event.listen(db.engine, "rollback", lambda conn: statements.append("ROLLBACK"))
    sa.event.listen(db.engine, "commit", lambda conn: statements.append("COMMIT"))
    seen: list[str] = []
    with db.unit_of_work(read_only=True) as uow:
        uow.on_commit(lambda: seen.append("done"))
        item = db.session.scalars(sa.select(Item)).one()
    assert statements == ["ROLLBACK"]
    assert seen == ["done"]
    assert item.name == "a"
    assert (db.stats.committed, db.stats.read_only, db.stats.rolled_back) == (1, 1, 0)


def test_raw_sql_writes_fail_in_a_read_only_unit_on_servers(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no READ ONLY transactions; ORM flushes are refused instead")
    with pytest.raises(sa.exc.DBAPIError, match="(?i)read.only"):
        with db.unit_of_work(read_only=True):
            db.session.execute(sa.text("INSERT INTO uow_item (name) VALUES ('raw')"))
    assert committed_names(observer) == []


def test_read_only_setting_does_not_leak_to_the_next_unit_on_the_same_connection(
    db: Database, observer: sa.Engine
) -> None:
    for _ in range(3):
        with db.unit_of_work(read_only=True):
            db.session.execute(sa.select(1))
        with db.unit_of_work():
            db.session.execute(sa.text("INSERT INTO uow_item (name) VALUES (:n)"), {"n": f"{_}"})
    assert committed_names(observer) == ["0", "1", "2"]


@pytest.mark.parametrize("propagation", [Propagation.REQUIRED, Propagation.NESTED])
def test_a_read_write_unit_cannot_join_a_read_only_one(
    db: Database, propagation: Propagation
) -> None:
    with db.unit_of_work(read_only=True):
        with pytest.raises(ReadOnlyViolation, match="cannot join"):
            with db.unit_of_work(propagation=propagation):
                pass
        with db.unit_of_work(read_only=True, propagation=propagation):
            db.session.execute(sa.select(1))


def test_read_only_requires_new_inside_read_write_unit_is_read_only(db: Database) -> None:
    with db.unit_of_work():
        with pytest.raises(ReadOnlyViolation):
            with db.unit_of_work(read_only=True, propagation=Propagation.REQUIRES_NEW):
                db.session.add(Item(name="x"))
                db.session.flush()


def test_changes_left_pending_in_a_read_only_unit_raise_instead_of_vanishing(
    db: Database, observer: sa.Engine
) -> None:
    rolled_back: list[bool] = []
    with pytest.raises(ReadOnlyViolation, match="1 new"):
        with db.unit_of_work(read_only=True) as uow:
            uow.on_rollback(lambda: rolled_back.append(True))
            db.session.add(Item(name="pending"))
    assert rolled_back == [True]
    assert committed_names(observer) == []
    assert checked_out(db) == 0
