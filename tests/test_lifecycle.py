"""Every exit path ends the unit: commit on success, rollback on any error, always close."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Generator

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import DetachedInstanceError

from flask_uow import Database, NoActiveUnitOfWork, Outcome, UnitOfWork, UnitOfWorkError

from .conftest import checked_out, committed_names
from .models import Item, Tag


class Boom(Exception):
    pass


def test_normal_exit_commits_and_returns_the_connection(db: Database, observer: sa.Engine) -> None:
    before = checked_out(db)
    with db.unit_of_work() as uow:
        uow.session.add(Item(name="a"))
        uow.session.flush()
        assert checked_out(db) == before + 1
    assert committed_names(observer) == ["a"]
    assert checked_out(db) == before


def test_every_return_path_of_a_decorated_function_commits(
    db: Database, observer: sa.Engine
) -> None:
    @db.transactional
    def do_something(x: int, name: str) -> str:
        if x != 10:
            db.session.add(Item(name=f"early-{name}"))
            return "early"
        db.session.add(Item(name=f"late-{name}"))
        return "late"

    assert do_something(1, "a") == "early"
    assert do_something(10, "b") == "late"
    assert committed_names(observer) == ["early-a", "late-b"]
    assert checked_out(db) == 0


@pytest.mark.parametrize(
    "error", [Boom("x"), KeyboardInterrupt(), SystemExit(3), GeneratorExit()], ids=type
)
def test_any_exception_rolls_back_and_is_reraised_unchanged(
    db: Database, observer: sa.Engine, error: BaseException
) -> None:
    with pytest.raises(type(error)) as raised:
        with db.unit_of_work():
            db.session.add(Item(name="lost"))
            db.session.flush()
            raise error
    assert raised.value is error
    assert committed_names(observer) == []
    assert checked_out(db) == 0
    assert db.current is None


def test_generator_closed_early_rolls_back_its_unit(db: Database, observer: sa.Engine) -> None:
    def produce() -> Generator[int, None, None]:
        with db.unit_of_work():
            db.session.add(Item(name="streamed"))
            db.session.flush()
            yield 1
            yield 2

    stream = produce()
    assert next(stream) == 1
    stream.close()
    assert committed_names(observer) == []
    assert checked_out(db) == 0


def test_commit_failure_rolls_back_closes_runs_rollback_hooks_and_raises_the_database_error(
    db: Database, observer: sa.Engine
) -> None:
    calls: list[str] = []

    def fail_at_commit(session: Session) -> None:
        session.connection().exec_driver_sql("SELECT * FROM no_such_table_at_commit")

    with pytest.raises(sa.exc.DBAPIError):
        with db.unit_of_work() as uow:
            uow.on_commit(lambda: calls.append("commit"))
            uow.on_rollback(lambda: calls.append("rollback"))
            db.session.add(Item(name="never"))
            event.listen(uow.session, "before_commit", fail_at_commit)
    assert calls == ["rollback"]
    assert committed_names(observer) == []
    assert checked_out(db) == 0
    assert db.stats.rolled_back == 1


def test_deferred_constraint_failing_at_commit_raises_and_rolls_back(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "mariadb":
        pytest.skip("MariaDB has no deferred constraints; the previous test covers it there")
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE uow_deferred (id INTEGER PRIMARY KEY, item_id INTEGER "
            "REFERENCES uow_item(id) DEFERRABLE INITIALLY DEFERRED)"
        )
    try:
        hooks: list[str] = []
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work() as uow:
                uow.on_commit(lambda: hooks.append("commit"))
                uow.on_rollback(lambda: hooks.append("rollback"))
                db.session.add(Item(name="kept-only-if-commit-works"))
                db.session.execute(sa.text("INSERT INTO uow_deferred VALUES (1, 999)"))
        assert hooks == ["rollback"]
        assert committed_names(observer) == []
        assert checked_out(db) == 0
    finally:
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE uow_deferred")


def test_session_used_outside_any_unit_raises_and_says_how_to_open_one(db: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match=r"@db\.transactional") as raised:
        db.session.execute(sa.select(1))
    assert "with db.unit_of_work()" in str(raised.value)
    assert db.current is None


def test_ambient_session_is_the_units_session(db: Database) -> None:
    with db.unit_of_work() as uow:
        assert db.session is uow.session
        assert db.current is uow


def test_a_unit_that_runs_no_sql_checks_out_no_connection(db: Database) -> None:
    checkouts: list[object] = []
    event.listen(db.engine, "checkout", lambda *args: checkouts.append(args))
    with db.unit_of_work() as uow:
        uow.session  # noqa: B018
        assert checked_out(db) == 0
    assert checkouts == []


def test_objects_loaded_inside_stay_readable_after_the_unit(db: Database) -> None:
    with db.unit_of_work():
        item = Item(name="kept")
        db.session.add(item)
    assert item.name == "kept"
    assert item.id is not None


def test_lazy_load_after_the_unit_raises_detached_and_eager_loading_avoids_it(
    db: Database,
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="parent", tags=[Tag(label="t")]))
    with db.unit_of_work():
        eager = db.session.scalars(sa.select(Item).options(selectinload(Item.tags))).one()
    assert [tag.label for tag in eager.tags] == ["t"]
    with db.unit_of_work():
        lazy = db.session.scalars(sa.select(Item)).one()
    with pytest.raises(DetachedInstanceError):
        lazy.tags  # noqa: B018


@pytest.mark.parametrize("method", ["commit", "rollback", "close"])
def test_ending_the_session_by_hand_inside_a_unit_raises_and_names_the_fix(
    db: Database, method: str
) -> None:
    with db.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="unit") as raised:
            getattr(db.session, method)()
    assert "inside a unit of work" in str(raised.value)
    assert checked_out(db) == 0


def test_a_session_of_the_session_class_made_by_hand_commits_and_closes_as_usual(
    db: Database, observer: sa.Engine
) -> None:
    session = db.session_class(bind=db.engine)
    session.add(Item(name="by hand"))
    session.commit()
    session.close()
    assert committed_names(observer) == ["by hand"]
    assert checked_out(db) == 0


def test_a_units_repr_shows_its_kind_state_and_propagation(db: Database) -> None:
    unit = db.unit_of_work()
    assert repr(unit) == "<UnitOfWork not entered new propagation=REQUIRED>"
    with unit:
        assert repr(unit) == "<UnitOfWork outermost active propagation=REQUIRED>"
    assert repr(unit) == "<UnitOfWork outermost ended propagation=REQUIRED>"


def test_a_unit_cannot_be_entered_twice(db: Database) -> None:
    unit = db.unit_of_work()
    with unit:
        pass
    with pytest.raises(UnitOfWorkError, match="only once"):
        with unit:
            pass


def test_the_session_is_unusable_after_its_unit_ends(db: Database) -> None:
    with db.unit_of_work() as uow:
        pass
    with pytest.raises(UnitOfWorkError, match="ended"):
        uow.session  # noqa: B018


def test_repr_masks_the_password() -> None:
    database = Database("postgresql+psycopg://app:hunter2@db.example/ledger")
    assert "hunter2" not in repr(database)
    assert "***" in repr(database)


def test_stats_count_outermost_units_exactly(db: Database) -> None:
    with db.unit_of_work():
        with db.unit_of_work():
            pass
    with pytest.raises(Boom):
        with db.unit_of_work():
            raise Boom
    with db.unit_of_work() as uow:
        uow.set_rollback()
        assert db.stats.active == 1
    stats = db.stats
    assert (stats.started, stats.committed, stats.rolled_back, stats.active) == (3, 1, 2, 0)
    assert stats.retried == 0


def test_unit_of_work_is_the_public_class(db: Database) -> None:
    assert isinstance(db.unit_of_work(), UnitOfWork)


def test_database_without_url_or_app_says_what_to_do() -> None:
    database = Database()
    with pytest.raises(UnitOfWorkError, match="init_app"):
        with database.unit_of_work():
            pass


def test_a_unit_names_the_file_and_line_where_db_unit_of_work_was_called(db: Database) -> None:
    def line_here() -> int:
        frame = sys._getframe(1)
        return frame.f_lineno

    expected = line_here() + 1
    with db.unit_of_work(
        read_only=True,
    ) as uow:
        this_code = sys._getframe().f_code
        assert uow.origin == (this_code, expected)
        assert uow.opened_at == f"{__file__}:{expected} in {this_code.co_name}"
    assert uow.opened_at == f"{__file__}:{expected} in {this_code.co_name}"


def test_an_ended_unit_keeps_no_reference_to_the_error_that_doomed_it(db: Database) -> None:
    """The error's traceback holds the frames of the failure and what they held (a driver's
    cursor, say: SQLite keeps a closed connection's locks while a statement of it lives)."""
    doomed_by: list[weakref.ref[BaseException]] = []
    with pytest.raises(KeyError):
        with db.unit_of_work() as outer:
            try:
                with db.unit_of_work():
                    raise Boom
            except Boom as error:
                doomed_by.append(weakref.ref(error))
            assert outer.will_roll_back
            raise KeyError("the unit leaves with an error of its own")
    gc.collect()
    assert outer.outcome is Outcome.ROLLED_BACK
    assert doomed_by[0]() is None
