"""Units that end with an error end as they promise: ROLLBACK, the savepoint's undo, the error
flask-uow documents, and a retry where one is safe."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from flask_uow import (
    CommitOutcomeUnknown,
    Database,
    Outcome,
    Propagation,
    UnexpectedRollback,
    UnitTimeout,
)

from .conftest import committed_names
from .models import Item

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


APPLICATION_NAME = sa.text("SELECT current_setting('application_name')")


def _needs_postgresql(backend_name: str) -> None:
    if backend_name != "postgresql":
        pytest.skip("SET application_name and psycopg's read-only ending are PostgreSQL's")


def test_a_read_only_unit_that_raises_rolls_back_what_it_set(
    db: Database, backend_name: str
) -> None:
    _needs_postgresql(backend_name)
    with pytest.raises(Boom):
        with db.unit_of_work(read_only=True) as uow:
            db.session.execute(sa.text("SET application_name = 'failed-read-only-unit'"))
            raise Boom
    assert uow.outcome is Outcome.ROLLED_BACK
    for _ in range(db.engine.pool.size()):  # type: ignore[attr-defined]
        with db.unit_of_work(read_only=True):
            assert db.session.scalar(APPLICATION_NAME) != "failed-read-only-unit"


async def test_an_async_read_only_unit_that_raises_rolls_back_what_it_set(
    adb: Database, backend_name: str
) -> None:
    _needs_postgresql(backend_name)
    with pytest.raises(Boom):
        async with adb.unit_of_work(read_only=True) as uow:
            await uow.session.execute(sa.text("SET application_name = 'failed-read-only-unit'"))
            raise Boom
    assert uow.outcome is Outcome.ROLLED_BACK
    for _ in range(3):
        async with adb.unit_of_work(read_only=True) as uow:
            assert await uow.session.scalar(APPLICATION_NAME) != "failed-read-only-unit"


def _slow_statement(backend_name: str) -> sa.TextClause:
    """A statement that runs for two seconds."""
    return sa.text("SELECT pg_sleep(2)" if backend_name == "postgresql" else "SELECT SLEEP(2)")


async def test_a_timeout_caught_outside_an_async_savepoint_keeps_the_outer_unit_going(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work():
        adb.session.add(Item(name="outer"))
        await adb.async_session.flush()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                async with adb.unit_of_work(propagation=Propagation.NESTED) as inner:
                    adb.session.add(Item(name="inner"))
                    await adb.async_session.flush()
                    await asyncio.sleep(5)  # cancelled here, between statements
        assert inner.outcome is Outcome.ROLLED_BACK
        adb.session.add(Item(name="after"))
    assert committed_names(observer) == ["after", "outer"]


async def test_a_timeout_cancelling_a_statement_in_an_async_savepoint_says_the_transaction_is_lost(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        # aiosqlite runs the statement to its end, and SQLAlchemy drops the cancelled
        # connection without closing it: its write lock would outlive the test.
        pytest.skip("a statement on aiosqlite cannot be cancelled")
    with pytest.raises(UnexpectedRollback, match="interrupted") as raised:
        async with adb.unit_of_work():
            adb.session.add(Item(name="outer"))
            await adb.async_session.flush()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    async with adb.unit_of_work(propagation=Propagation.NESTED):
                        await adb.async_session.execute(_slow_statement(backend_name))
            adb.session.add(Item(name="after"))  # no raw PendingRollbackError here
            await adb.async_session.flush()
    assert not isinstance(raised.value.__cause__, sa.exc.PendingRollbackError)
    assert committed_names(observer) == []


def _needs_idle_timeout(request: pytest.FixtureRequest, backend_name: str) -> None:
    if backend_name != "postgresql":
        pytest.skip("idle_in_transaction_session_timeout (SQLSTATE 25P03) is PostgreSQL's")
    if request.node.callspec.params["backend_url"] == "pgbouncer":
        pytest.skip("behind PgBouncer the driver never sees SQLSTATE 25P03 (see the test below)")


def test_behind_pgbouncer_an_idle_in_transaction_timeout_at_commit_stays_an_unknown_outcome(
    request: pytest.FixtureRequest, db: Database, backend_name: str
) -> None:
    # PgBouncer answers such a COMMIT with two results and psycopg reports only "received 2
    # results from command 'COMMIT'": nothing says that the server never saw the COMMIT.
    if request.node.callspec.params["backend_url"] != "pgbouncer":
        pytest.skip("the test above covers a direct connection")
    with pytest.raises(CommitOutcomeUnknown):
        with db.unit_of_work() as uow:
            db.session.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 100"))
            db.session.add(Item(name="idle"))
            db.session.flush()
            time.sleep(0.5)
    assert uow.outcome is Outcome.OUTCOME_UNKNOWN


def test_an_idle_in_transaction_timeout_before_commit_is_a_rollback_not_an_unknown_outcome(
    request: pytest.FixtureRequest, db: Database, observer: sa.Engine, backend_name: str
) -> None:
    _needs_idle_timeout(request, backend_name)
    ran: list[str] = []
    with pytest.raises(sa.exc.DBAPIError) as raised:
        with db.unit_of_work() as uow:
            uow.on_rollback(lambda: ran.append("on_rollback"))
            uow.on_outcome_unknown(lambda: ran.append("on_outcome_unknown"))
            db.session.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 100"))
            db.session.add(Item(name="idle"))
            db.session.flush()
            time.sleep(0.5)  # the server ends the session before COMMIT is sent
    assert not isinstance(raised.value, CommitOutcomeUnknown)
    assert uow.outcome is Outcome.ROLLED_BACK
    assert ran == ["on_rollback"]
    assert committed_names(observer) == []


def test_an_idle_in_transaction_timeout_before_commit_is_retried(
    request: pytest.FixtureRequest, db: Database, observer: sa.Engine, backend_name: str
) -> None:
    _needs_idle_timeout(request, backend_name)
    attempts: list[int] = []

    @db.transactional(retries=2)
    def work() -> None:
        attempts.append(len(attempts) + 1)
        db.session.add(Item(name=f"attempt-{len(attempts)}"))
        db.session.flush()
        if len(attempts) == 1:
            db.session.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 100"))
            time.sleep(0.5)

    work()
    assert attempts == [1, 2]
    assert committed_names(observer) == ["attempt-2"]


def test_a_statement_timeout_in_a_savepoint_raises_unit_timeout_and_the_outer_unit_goes_on(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    with db.unit_of_work(statement_timeout=0.2):
        db.session.add(Item(name="outer"))
        with pytest.raises(UnitTimeout) as raised:
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.execute(_slow_statement(backend_name)).all()
        assert raised.value.kind == "statement"
        assert isinstance(raised.value.__cause__, sa.exc.DBAPIError)
    assert committed_names(observer) == ["outer"]


def test_a_statement_timeout_in_a_joined_unit_raises_unit_timeout(
    db: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    with db.unit_of_work(statement_timeout=0.2) as outer:
        with pytest.raises(UnitTimeout):
            with db.unit_of_work():
                db.session.execute(_slow_statement(backend_name)).all()
        outer.set_rollback()  # the joined unit doomed it; end it quietly
