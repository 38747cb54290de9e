"""A unit interrupted while its ROLLBACK (or ROLLBACK TO SAVEPOINT) is on its way still ends.

A real SIGINT, or the shutdown of ``asyncio.run()`` (which cancels the task that ends an async
unit), strikes as the ROLLBACK goes out. COMMIT was never sent, so the outcome is known: the
unit ends rolled back, runs its ``on_rollback`` hooks, returns its connection and lets the
interruption go on. A savepoint interrupted so dooms its enclosing unit, whose transaction may
still hold the savepoint's work; when the interruption also closed the connection (a
cancellation landing in an async ROLLBACK TO), the whole transaction is lost, and every enclosing
unit ends rolled back with an UnexpectedRollback that says so.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.util import await_only

from flask_uow import Database, Outcome, Propagation, UnexpectedRollback, UnitOfWork

from ._interrupt import (
    HOLD_SECONDS,
    RollbackAnswerHoldingProxy,
    holding_proxy,
    sigint_main_thread,
)
from .conftest import async_checked_out, checked_out, committed_names
from .models import Item


class Boom(Exception):
    pass


def _hooks(unit: object, ran: list[str]) -> None:
    unit.on_commit(lambda: ran.append("on_commit"))  # type: ignore[attr-defined]
    unit.on_rollback(lambda: ran.append("on_rollback"))  # type: ignore[attr-defined]
    unit.on_outcome_unknown(lambda: ran.append("on_outcome_unknown"))  # type: ignore[attr-defined]


def _assert_rolled_back(db: Database, unit: UnitOfWork, ran: list[str]) -> None:
    assert unit.outcome is Outcome.ROLLED_BACK
    assert ran == ["on_rollback"]
    stats = db.stats
    assert (stats.active, stats.rolled_back, stats.committed, stats.outcome_unknown) == (0, 1, 0, 0)


def test_a_sigint_while_rollback_is_on_its_way_still_ends_the_unit_rolled_back(
    db: Database, observer: sa.Engine
) -> None:
    assert threading.current_thread() is threading.main_thread(), "SIGINT reaches the main thread"
    ran: list[str] = []
    event.listen(db.engine, "rollback", _sigint)
    try:
        with pytest.raises(KeyboardInterrupt), db.unit_of_work() as unit:
            _hooks(unit, ran)
            db.session.add(Item(name="rolled back"))
            db.session.flush()
            raise Boom
    finally:
        event.remove(db.engine, "rollback", _sigint)
    _assert_rolled_back(db, unit, ran)
    assert checked_out(db) == 0
    assert committed_names(observer) == []


def test_asyncio_run_returning_while_rollback_is_on_its_way_still_ends_the_unit(
    db: Database, backend_url: str, backend_name: str, observer: sa.Engine
) -> None:
    ran: list[str] = []
    units: list[UnitOfWork] = []
    raised: list[BaseException] = []
    reached = threading.Event()

    def wait_in_rollback(_: sa.Connection) -> None:
        reached.set()
        await_only(asyncio.sleep(HOLD_SECONDS))

    async def fail(target: Database) -> None:
        try:
            async with target.unit_of_work() as unit:
                units.append(unit)  # type: ignore[arg-type]
                _hooks(unit, ran)
                target.session.add(Item(name="rolled back"))
                await target.async_session.flush()
                raise Boom
        except BaseException as error:
            raised.append(error)
            raise

    async def main(target: Database) -> None:
        asyncio.get_running_loop().create_task(fail(target))
        while not reached.is_set():  # ROLLBACK is on its way
            await asyncio.sleep(0.01)
        # Returning now: asyncio.run() cancels every task left, the one ending the unit too.

    if backend_name == "sqlite":  # no server: a listener waits as the ROLLBACK goes out
        target = db
        engine = db.async_engine.sync_engine
        event.listen(engine, "rollback", wait_in_rollback)
        try:
            asyncio.run(main(target))
        finally:
            event.remove(engine, "rollback", wait_in_rollback)
    else:  # ROLLBACK reaches the server; a proxy holds its answer back
        with holding_proxy(backend_url, RollbackAnswerHoldingProxy) as (url, proxy):
            target = Database(url)
            proxy.holding = True

            def reach() -> None:
                if proxy.commit_sent.wait(HOLD_SECONDS):
                    reached.set()
                    # psycopg answers a cancellation by waiting for the statement's answer:
                    # let it come once the shutdown has cancelled the task (no assertion
                    # depends on this delay; it only spares the wait for HOLD_SECONDS).
                    time.sleep(0.5)
                    proxy.release()

            threading.Thread(target=reach, daemon=True).start()
            asyncio.run(main(target))
            proxy.release()
    assert [type(error) for error in raised] == [asyncio.CancelledError]
    _assert_rolled_back(target, units[0], ran)
    assert async_checked_out(target) == 0
    assert committed_names(observer) == []
    asyncio.run(target.dispose_async())
    target.dispose()


def test_a_sigint_while_rolling_back_to_a_savepoint_dooms_the_enclosing_unit(
    db: Database, observer: sa.Engine
) -> None:
    assert threading.current_thread() is threading.main_thread(), "SIGINT reaches the main thread"
    with pytest.raises(UnexpectedRollback), db.unit_of_work() as outer:
        db.session.add(Item(name="outer"))
        db.session.flush()
        event.listen(db.engine, "rollback_savepoint", _sigint)
        try:
            with pytest.raises(KeyboardInterrupt):
                with db.unit_of_work(propagation=Propagation.NESTED) as savepoint:
                    db.session.add(Item(name="savepoint"))
                    db.session.flush()
                    raise Boom
        finally:
            event.remove(db.engine, "rollback_savepoint", _sigint)
        assert savepoint.outcome is Outcome.ROLLED_BACK
        # The KeyboardInterrupt was caught: the outer unit goes on, and cannot commit.
    assert outer.outcome is Outcome.DOOMED
    assert db.stats.active == 0
    assert checked_out(db) == 0
    assert committed_names(observer) == []


def _cancel_this_task(*_: object) -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()  # lands at the ROLLBACK TO's await: SQLAlchemy drops the connection


@pytest.mark.anyio
async def test_a_cancelled_async_rollback_to_a_savepoint_ends_the_enclosing_unit_with_why(
    adb: Database, observer: sa.Engine
) -> None:
    ran: list[str] = []
    engine = adb.async_engine.sync_engine
    with pytest.raises(UnexpectedRollback, match="connection was closed") as raised:
        async with adb.unit_of_work() as outer:
            _hooks(outer, ran)
            adb.session.add(Item(name="outer"))
            await adb.async_session.flush()
            event.listen(engine, "rollback_savepoint", _cancel_this_task)
            try:
                with pytest.raises(asyncio.CancelledError):
                    async with adb.unit_of_work(propagation=Propagation.NESTED) as savepoint:
                        adb.session.add(Item(name="savepoint"))
                        await adb.async_session.flush()
                        raise Boom
            finally:
                event.remove(engine, "rollback_savepoint", _cancel_this_task)
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            assert savepoint.outcome is Outcome.ROLLED_BACK
            assert outer.will_roll_back
            # The connection went with the transaction: a statement now runs in a new one,
            # not into SQLAlchemy's PendingRollbackError.
            await adb.async_session.execute(sa.select(sa.func.count()).select_from(Item))
    assert "PendingRollbackError" not in str(raised.value)
    assert outer.outcome is Outcome.DOOMED
    assert ran == ["on_rollback"]
    assert adb.stats.active == 0
    assert async_checked_out(adb) == 0
    assert committed_names(observer) == []


@pytest.mark.anyio
async def test_a_transaction_lost_under_two_savepoints_dooms_the_outer_savepoint_too(
    adb: Database, observer: sa.Engine
) -> None:
    engine = adb.async_engine.sync_engine
    with pytest.raises(UnexpectedRollback, match="connection was closed"):
        async with adb.unit_of_work() as outer:
            adb.session.add(Item(name="outer"))
            await adb.async_session.flush()
            with pytest.raises(UnexpectedRollback, match="connection was closed"):
                async with adb.unit_of_work(propagation=Propagation.NESTED) as middle:
                    event.listen(engine, "rollback_savepoint", _cancel_this_task)
                    try:
                        with pytest.raises(asyncio.CancelledError):
                            async with adb.unit_of_work(propagation=Propagation.NESTED):
                                await adb.async_session.execute(sa.select(1))
                                raise Boom
                    finally:
                        event.remove(engine, "rollback_savepoint", _cancel_this_task)
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    adb.session.add(Item(name="after the loss"))
                    await adb.async_session.flush()
            assert middle.outcome is Outcome.DOOMED
            # Caught: the outer unit goes on, and cannot commit what the lost transaction held.
    assert outer.outcome is Outcome.DOOMED
    assert adb.stats.active == 0
    assert async_checked_out(adb) == 0
    assert committed_names(observer) == []


def _sigint(*_: object) -> None:
    sigint_main_thread()
