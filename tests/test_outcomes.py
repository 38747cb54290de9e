"""Every way a unit can end has its own, visible outcome: none is reported as another."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from flask_uow import (
    CommitOutcomeUnknown,
    Database,
    Outcome,
    Propagation,
    UnexpectedRollback,
    UnitOfWorkError,
)

from .conftest import checked_out, committed_names
from .models import Item

# -- session events --------------------------------------------------------------------------


def test_before_commit_listeners_see_the_changes_about_to_be_committed(db: Database) -> None:
    seen: list[tuple[int, int]] = []

    def index_changes(session: Session) -> None:
        seen.append((len(session.new), len(session.dirty)))

    event.listen(db.session, "before_commit", index_changes)
    try:
        with db.unit_of_work():
            db.session.add(Item(name="indexed"))
    finally:
        event.remove(db.session, "before_commit", index_changes)
    assert seen == [(1, 0)]


def _event_sequence(session_class: type[Session], run: Any) -> list[str]:
    names = ["before_commit", "before_flush", "after_flush", "after_commit", "after_begin"]
    seen: list[str] = []
    listeners = {name: (lambda *args, _name=name, **kw: seen.append(_name)) for name in names}
    for name, listener in listeners.items():
        event.listen(session_class, name, listener)
    try:
        run()
    finally:
        for name, listener in listeners.items():
            event.remove(session_class, name, listener)
    return seen


def test_session_events_fire_in_the_same_order_as_with_a_plain_session(db: Database) -> None:
    def with_unit() -> None:
        with db.unit_of_work():
            db.session.add(Item(name="unit"))

    class Plain(Session):
        pass

    def with_plain_session() -> None:
        with Plain(db.engine) as session, session.begin():
            session.add(Item(name="plain"))

    assert _event_sequence(db.session_class, with_unit) == _event_sequence(
        Plain, with_plain_session
    )


def test_listening_to_the_session_proxy_does_not_listen_to_other_databases(
    db: Database, tmp_path: Any
) -> None:
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    seen: list[str] = []
    listener = lambda session: seen.append("commit")  # noqa: E731
    event.listen(other.session, "before_commit", listener)
    try:
        with db.unit_of_work():
            db.session.add(Item(name="not the other database"))
    finally:
        event.remove(other.session, "before_commit", listener)
        other.dispose()
    assert seen == []


# -- commits that cannot happen -----------------------------------------------------------------


def test_a_caught_flush_failure_makes_the_unit_roll_back_and_name_nested(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="taken"))
    hooks: list[str] = []
    with pytest.raises(UnexpectedRollback, match=r"Propagation\.NESTED"):
        with db.unit_of_work() as uow:
            uow.on_commit(lambda: hooks.append("commit"))
            uow.on_rollback(lambda: hooks.append("rollback"))
            db.session.add(Item(name="kept?"))
            db.session.flush()
            try:
                db.session.add(Item(name="taken"))
                db.session.flush()
            except sa.exc.IntegrityError:
                pass
    assert hooks == ["rollback"]
    assert committed_names(observer) == ["taken"]
    assert db.stats.rolled_back == 1
    assert checked_out(db) == 0


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_a_caught_statement_error_on_postgresql_never_reports_a_commit(
    db: Database, observer: sa.Engine
) -> None:
    hooks: list[str] = []
    with pytest.raises(UnexpectedRollback, match=r"Propagation\.NESTED"):
        with db.unit_of_work() as uow:
            uow.on_commit(lambda: hooks.append("commit"))
            uow.on_rollback(lambda: hooks.append("rollback"))
            db.session.add(Item(name="lost with the aborted transaction"))
            db.session.flush()
            try:
                db.session.execute(sa.text("SELECT * FROM no_such_table"))
            except sa.exc.ProgrammingError:
                pass
    assert hooks == ["rollback"]
    assert committed_names(observer) == []
    assert (db.stats.committed, db.stats.rolled_back) == (0, 1)


def test_a_caught_statement_error_inside_nested_lets_the_outer_unit_commit(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        try:
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.execute(sa.text("SELECT * FROM no_such_table"))
        except sa.exc.DBAPIError:
            pass
    assert committed_names(observer) == ["outer"]


def test_a_caught_flush_failure_inside_nested_undoes_its_savepoint_and_the_outer_unit_commits(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="taken"))
    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        with pytest.raises(UnexpectedRollback, match="savepoint was rolled back"):
            with db.unit_of_work(propagation=Propagation.NESTED) as nested:
                db.session.add(Item(name="inner"))
                db.session.add(Item(name="taken"))
                try:
                    db.session.flush()
                except sa.exc.IntegrityError:
                    pass
        assert nested.outcome is Outcome.DOOMED
        db.session.add(Item(name="after"))
    assert committed_names(observer) == ["after", "outer", "taken"]
    assert checked_out(db) == 0


# -- commit outcome unknown -------------------------------------------------------------------


@contextmanager
def connection_lost_during_commit(
    db: Database, backend_name: str, engine: sa.Engine | None = None
) -> Iterator[None]:
    """Lose the unit's connection after the flush, while COMMIT is on its way (on ``engine``,
    by default ``db.engine``; an async engine's ``sync_engine`` for async units)."""
    engine = engine if engine is not None else db.engine
    if backend_name == "sqlite":
        dialect = engine.dialect

        def closed_database(dbapi_connection: Any) -> None:
            import sqlite3

            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

        original = dialect.do_commit
        dialect.do_commit = closed_database  # type: ignore[method-assign]
        try:
            yield
        finally:
            dialect.do_commit = original  # type: ignore[method-assign]
        return
    killer = sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)

    def kill_own_backend(connection: sa.Connection) -> None:
        if backend_name == "postgresql":
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            statement = f"SELECT pg_terminate_backend({pid})"
        else:
            pid = connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            statement = f"KILL {pid}"
        with killer.connect() as other:
            other.exec_driver_sql(statement)
            other.commit()

    event.listen(engine, "commit", kill_own_backend)
    try:
        yield
    finally:
        event.remove(engine, "commit", kill_own_backend)
        killer.dispose()


def test_a_connection_lost_during_commit_raises_outcome_unknown_and_runs_neither_hook(
    db: Database, backend_name: str
) -> None:
    hooks: list[str] = []
    unit = db.unit_of_work()
    with connection_lost_during_commit(db, backend_name):
        with pytest.raises(CommitOutcomeUnknown, match="not retried") as raised:
            with unit:
                unit.on_commit(lambda: hooks.append("commit"))
                unit.on_rollback(lambda: hooks.append("rollback"))
                unit.on_outcome_unknown(lambda: hooks.append("unknown"))
                db.session.add(Item(name="maybe"))
    assert isinstance(raised.value.__cause__, sa.exc.DBAPIError)
    assert hooks == ["unknown"]
    assert unit.failed_during_commit
    assert unit.outcome is Outcome.OUTCOME_UNKNOWN
    stats = db.stats
    assert (stats.committed, stats.rolled_back, stats.outcome_unknown) == (0, 0, 1)
    assert checked_out(db) == 0


def test_commit_outcome_unknown_names_the_outbox_messages_of_its_transaction(
    db: Database, backend_name: str
) -> None:
    with connection_lost_during_commit(db, backend_name):
        with pytest.raises(CommitOutcomeUnknown) as raised:
            with db.unit_of_work():
                db.session.add(Item(name="maybe"))
                db.session.info["flask_uow_outbox_ids"] = ["message-1", "message-2"]
    assert raised.value.message_ids == ("message-1", "message-2")


def test_commit_outcome_unknown_names_no_messages_without_an_outbox(
    db: Database, backend_name: str
) -> None:
    with connection_lost_during_commit(db, backend_name):
        with pytest.raises(CommitOutcomeUnknown) as raised:
            with db.unit_of_work():
                db.session.add(Item(name="maybe"))
    assert raised.value.message_ids == ()


def test_a_commit_whose_outcome_is_unknown_is_never_retried(
    db: Database, backend_name: str
) -> None:
    attempts: list[int] = []

    @db.transactional(retries=3)
    def register() -> None:
        attempts.append(1)
        db.session.add(Item(name=f"attempt-{len(attempts)}"))

    with connection_lost_during_commit(db, backend_name):
        with pytest.raises(CommitOutcomeUnknown):
            register()
    assert attempts == [1]
    assert db.stats.retried == 0


def test_failed_during_commit_is_false_after_a_successful_commit(db: Database) -> None:
    with db.unit_of_work() as uow:
        db.session.add(Item(name="fine"))
    assert uow.outcome is Outcome.COMMITTED
    assert not uow.failed_during_commit


# -- savepoints --------------------------------------------------------------------------------


def test_a_savepoint_whose_release_fails_is_rolled_back_and_the_caller_decides(
    db: Database, observer: sa.Engine
) -> None:
    failures = [RuntimeError("RELEASE failed")]

    def fail_once(connection: sa.Connection, name: str, context: Any) -> None:
        if failures:
            raise failures.pop()

    with db.unit_of_work():
        db.session.add(Item(name="outer"))
        db.session.flush()
        event.listen(db.engine, "release_savepoint", fail_once)
        try:
            with pytest.raises(RuntimeError, match="RELEASE failed"):
                with db.unit_of_work(propagation=Propagation.NESTED):
                    db.session.add(Item(name="inside the failed savepoint"))
                    db.session.flush()
        finally:
            event.remove(db.engine, "release_savepoint", fail_once)
        assert db.session.scalars(sa.select(Item.name)).all() == ["outer"]
    assert committed_names(observer) == ["outer"]


def test_failed_savepoints_in_a_loop_leave_no_savepoint_open(db: Database) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "SAVEPOINT" in statement.upper():
            statements.append(statement.upper().split()[0])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.unit_of_work():
            db.session.add(Item(name="taken"))
            db.session.flush()
            for _ in range(3):
                with pytest.raises(sa.exc.IntegrityError):
                    with db.unit_of_work(propagation=Propagation.NESTED):
                        db.session.add(Item(name="taken"))
                        db.session.flush()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert statements.count("SAVEPOINT") == 3
    assert statements.count("RELEASE") == 3


# -- isolation levels on joined units -------------------------------------------------------


@pytest.mark.parametrize("propagation", [Propagation.REQUIRED, Propagation.NESTED])
def test_a_joined_unit_asking_for_another_isolation_level_raises_naming_the_fix(
    db: Database, propagation: Propagation
) -> None:
    with db.unit_of_work(isolation_level="READ COMMITTED"):
        with pytest.raises(UnitOfWorkError, match="REQUIRES_NEW"):
            with db.unit_of_work(propagation=propagation, isolation_level="SERIALIZABLE"):
                pass


def test_a_joined_unit_asking_for_its_transactions_isolation_level_joins(db: Database) -> None:
    with db.unit_of_work(isolation_level="SERIALIZABLE") as outer:
        with db.unit_of_work(isolation_level="serializable") as inner:
            assert inner.session is outer.session


# -- hooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("register", ["on_commit", "on_rollback", "on_outcome_unknown"])
def test_a_hook_that_cannot_be_called_is_refused_when_registered(
    db: Database, register: str
) -> None:
    with db.unit_of_work() as uow:
        with pytest.raises(TypeError, match="not the result of calling it"):
            getattr(uow, register)(None)


def test_db_on_commit_refuses_a_non_callable_too(db: Database) -> None:
    with db.unit_of_work(), pytest.raises(TypeError):
        db.on_commit("send_mail")  # type: ignore[arg-type]


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt, without interrupting pytest."""


def test_a_hook_raising_a_base_exception_stops_the_later_hooks_and_propagates(
    db: Database, observer: sa.Engine
) -> None:
    ran: list[str] = []

    def interrupted() -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        with db.unit_of_work() as uow:
            db.session.add(Item(name="committed before the hooks"))
            uow.on_commit(interrupted)
            uow.on_commit(lambda: ran.append("later"))
    assert ran == []
    assert committed_names(observer) == ["committed before the hooks"]


# -- counters ------------------------------------------------------------------------------


def test_stats_count_each_outcome_apart(db: Database) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="a"))
    with db.unit_of_work(read_only=True):
        db.session.execute(sa.select(1))
    with db.unit_of_work() as uow:
        uow.set_rollback()
    stats = db.stats
    assert (stats.started, stats.committed, stats.read_only, stats.rolled_back) == (3, 1, 1, 1)
    assert stats.active == 0
