"""``session_commit="savepoint"``: code written for Flask-SQLAlchemy may call
``session.commit()`` and ``session.rollback()`` inside a unit, and the unit still decides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from flask_uow import Database, NoActiveUnitOfWork, Propagation, UnitOfWorkError

from .conftest import checked_out, committed_names
from .models import Item


class Boom(Exception):
    pass


@pytest.fixture
def sdb(db: Database) -> Iterator[Database]:
    """``db`` with ``session_commit="savepoint"``."""
    db.session_commit = "savepoint"
    yield db
    db.session_commit = "raise"


def test_work_before_commit_is_kept_and_committed_only_when_the_unit_ends(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="first"))
        sdb.session.commit()
        assert committed_names(observer) == []  # not durable until the unit ends
        sdb.session.add(Item(name="second"))
    assert committed_names(observer) == ["first", "second"]
    assert checked_out(sdb) == 0


def test_a_unit_that_raises_after_commit_rolls_back_everything(
    sdb: Database, observer: sa.Engine
) -> None:
    with pytest.raises(Boom), sdb.unit_of_work():
        sdb.session.add(Item(name="first"))
        sdb.session.commit()
        sdb.session.add(Item(name="second"))
        sdb.session.commit()
        raise Boom
    assert committed_names(observer) == []


def test_rollback_undoes_only_the_work_since_the_last_commit_and_the_unit_goes_on(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="kept"))
        sdb.session.commit()
        sdb.session.add(Item(name="undone"))
        sdb.session.flush()
        sdb.session.rollback()
        sdb.session.rollback()  # nothing since the last commit(): undoes nothing more
        assert sdb.session.scalars(sa.select(Item.name)).all() == ["kept"]
        sdb.session.add(Item(name="after"))
    assert committed_names(observer) == ["after", "kept"]


def test_rollback_before_the_first_commit_undoes_all_the_units_work_and_the_unit_goes_on(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="undone"))
        sdb.session.flush()
        sdb.session.rollback()
        assert sdb.session.scalars(sa.select(Item.name)).all() == []
        sdb.session.add(Item(name="after"))
    assert committed_names(observer) == ["after"]
    assert checked_out(sdb) == 0


def test_a_duplicate_key_at_commit_can_be_rolled_back_and_the_other_rows_stay(
    sdb: Database, observer: sa.Engine
) -> None:
    # Flask-Admin's create view: add, commit(), and on error rollback() and show a message.
    with sdb.unit_of_work():
        sdb.session.add(Item(name="ada"))
        sdb.session.commit()
        sdb.session.add(Item(name="ada"))
        with pytest.raises(IntegrityError):
            sdb.session.commit()
        sdb.session.rollback()
        sdb.session.add(Item(name="grace"))
        sdb.session.commit()
    assert committed_names(observer) == ["ada", "grace"]


def test_a_duplicate_key_before_any_commit_rolls_back_the_units_work_and_the_unit_goes_on(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="ada"))
        sdb.session.flush()
        sdb.session.add(Item(name="ada"))
        with pytest.raises(IntegrityError):
            sdb.session.flush()
        sdb.session.rollback()
        sdb.session.add(Item(name="grace"))
    assert committed_names(observer) == ["grace"]


def test_each_commit_sends_one_savepoint_and_releases_the_previous_one(
    sdb: Database,
) -> None:
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement.split(" sa_savepoint")[0])

    event.listen(sdb.engine, "before_cursor_execute", record)
    try:
        with sdb.unit_of_work():
            sdb.session.add(Item(name="one"))
            sdb.session.flush()
            sent.clear()
            sdb.session.commit()
            first = list(sent)
            sent.clear()
            sdb.session.commit()
            second = list(sent)
        with sdb.unit_of_work():
            sent.clear()
            sdb.session.add(Item(name="two"))
            sdb.session.flush()
            without_commit = list(sent)
    finally:
        event.remove(sdb.engine, "before_cursor_execute", record)
    assert first == ["SAVEPOINT"]
    assert second == ["RELEASE SAVEPOINT", "SAVEPOINT"]
    assert not any("SAVEPOINT" in statement for statement in without_commit)


def test_a_commit_before_any_sql_sends_nothing(sdb: Database) -> None:
    sent: list[str] = []
    event.listen(sdb.engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    with sdb.unit_of_work():
        sdb.session.commit()
    assert sent == []


def test_commit_and_rollback_inside_a_nested_unit_raise_and_say_why(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="outer"))
        sdb.session.commit()
        with pytest.raises(UnitOfWorkError, match="NESTED unit"):
            with sdb.unit_of_work(propagation=Propagation.NESTED):
                sdb.session.add(Item(name="inner"))
                sdb.session.commit()
        with pytest.raises(UnitOfWorkError, match="NESTED unit"):
            with sdb.unit_of_work(propagation=Propagation.NESTED):
                sdb.session.rollback()
    assert committed_names(observer) == ["outer"]


def test_a_nested_unit_after_a_commit_rolls_back_only_itself(
    sdb: Database, observer: sa.Engine
) -> None:
    with sdb.unit_of_work():
        sdb.session.add(Item(name="kept"))
        sdb.session.commit()
        with pytest.raises(Boom), sdb.unit_of_work(propagation=Propagation.NESTED):
            sdb.session.add(Item(name="undone"))
            sdb.session.flush()
            raise Boom
        sdb.session.add(Item(name="after"))
        sdb.session.rollback()  # back to the point of the commit() above
    assert committed_names(observer) == ["kept"]


def test_outside_a_unit_commit_and_rollback_raise_and_close_and_remove_do_nothing(
    sdb: Database,
) -> None:
    with pytest.raises(NoActiveUnitOfWork):
        sdb.session.commit()
    with pytest.raises(NoActiveUnitOfWork):
        sdb.session.rollback()
    sdb.session.close()
    sdb.session.remove()  # type: ignore[attr-defined]


def test_close_and_remove_inside_a_unit_still_raise(sdb: Database) -> None:
    with sdb.unit_of_work():
        proxy = sdb._proxy
        with pytest.raises(UnitOfWorkError, match="closes its session"):
            proxy.close()
        with pytest.raises(UnitOfWorkError, match="closes its own session"):
            proxy.remove()


def test_by_default_commit_raises_and_names_the_savepoint_mode(db: Database) -> None:
    assert db.session_commit == "raise"
    with pytest.raises(UnitOfWorkError, match="session_commit='savepoint'"):
        with db.unit_of_work():
            db.session.commit()
    with pytest.raises(UnitOfWorkError, match="each unit of work closes its own session"):
        db.session.remove()  # type: ignore[attr-defined]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'raise'.*'savepoint'"):
        Database("sqlite://", session_commit="flush")


@pytest.mark.anyio
async def test_an_async_unit_commits_and_rolls_back_to_points_the_same_way(
    adb: Database, observer: sa.Engine
) -> None:
    adb.session_commit = "savepoint"
    try:
        async with adb.unit_of_work():
            adb.async_session.add(Item(name="kept"))
            await adb.async_session.commit()
            adb.async_session.add(Item(name="undone"))
            await adb.async_session.flush()
            await adb.async_session.rollback()
            adb.async_session.add(Item(name="after"))
        with pytest.raises(Boom):
            async with adb.unit_of_work():
                adb.async_session.add(Item(name="lost"))
                await adb.async_session.commit()
                raise Boom
    finally:
        adb.session_commit = "raise"
    assert committed_names(observer) == ["after", "kept"]


@pytest.mark.flask
def test_the_flask_config_key_sets_the_mode() -> None:
    from flask import Flask

    db = Database()
    app = Flask(__name__)
    app.config.update(UOW_DATABASE_URL="sqlite://", UOW_SESSION_COMMIT="savepoint")
    db.init_app(app)
    assert db.session_commit == "savepoint"
