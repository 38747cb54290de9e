"""Async units: the guarantees of sync units, through AsyncSession, on every backend."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, assert_type, cast

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from flask_uow import (
    AsyncUnitSession,
    CommitOutcomeUnknown,
    Database,
    NoActiveUnitOfWork,
    Outcome,
    Propagation,
    ReadOnlyViolation,
    UnexpectedRollback,
    UnitKind,
    UnitOfWorkError,
)

from .conftest import async_checked_out, committed_names
from .models import Item

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


# -- every exit path ---------------------------------------------------------------------------


async def test_commits_when_the_block_ends_normally_and_returns_the_connection(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work() as uow:
        assert isinstance(uow.session, AsyncUnitSession)
        assert adb.async_session is uow.session
        assert cast(object, adb.session) is uow.session
        assert isinstance(uow.session.sync_session, adb.session_class)
        adb.session.add(Item(name="committed"))
        await adb.async_session.flush()
        assert async_checked_out(adb) == 1
    assert uow.outcome is Outcome.COMMITTED
    assert committed_names(observer) == ["committed"]
    assert async_checked_out(adb) == 0


async def test_rolls_back_and_reraises_when_the_block_raises(
    adb: Database, observer: sa.Engine
) -> None:
    with pytest.raises(Boom):
        async with adb.unit_of_work() as uow:
            adb.session.add(Item(name="lost"))
            await adb.async_session.flush()
            raise Boom
    assert uow.outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


async def test_set_rollback_ends_the_unit_with_rollback_without_an_exception(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work() as uow:
        adb.session.add(Item(name="dry-run"))
        await adb.async_session.flush()
        uow.set_rollback()
    assert uow.outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == []


async def test_cancelling_the_task_rolls_back_returns_the_connection_and_reraises(
    adb: Database, observer: sa.Engine
) -> None:
    inside = asyncio.Event()
    units = []

    async def work() -> None:
        async with adb.unit_of_work() as uow:
            units.append(uow)
            adb.session.add(Item(name="cancelled"))
            await adb.async_session.flush()
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert units[0].outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


async def test_a_timeout_rolls_back_and_raises_timeout_error(
    adb: Database, observer: sa.Engine
) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            async with adb.unit_of_work() as uow:
                adb.session.add(Item(name="too-slow"))
                await adb.async_session.flush()
                await asyncio.Event().wait()
    assert uow.outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


async def cancel_during_commit(
    adb: Database, work: Callable[[], Coroutine[Any, Any, None]]
) -> BaseException:
    """Run ``work`` in a task, cancel it while its unit's COMMIT is under way, check the
    cancellation waits for the COMMIT, and return the CancelledError the task ended with."""
    in_commit = asyncio.Event()
    release = asyncio.Event()

    def wait_in_commit(session: Session) -> None:
        in_commit.set()
        await_only(release.wait())

    event.listen(adb.session_class, "before_commit", wait_in_commit)
    try:
        task = asyncio.create_task(work())
        await in_commit.wait()
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
    finally:
        event.remove(adb.session_class, "before_commit", wait_in_commit)
    return raised.value


async def test_a_cancellation_during_commit_lets_the_commit_finish_then_reraises(
    adb: Database, observer: sa.Engine
) -> None:
    units = []

    async def work() -> None:
        async with adb.unit_of_work() as uow:
            units.append(uow)
            adb.session.add(Item(name="committed-anyway"))

    await cancel_during_commit(adb, work)
    assert units[0].outcome is Outcome.COMMITTED
    assert committed_names(observer) == ["committed-anyway"]
    assert async_checked_out(adb) == 0


async def test_a_decorated_coroutine_timed_out_while_committing_raises_timeout_error_and_commits(
    adb: Database, observer: sa.Engine
) -> None:
    # docs/async.md, "Three traps": the COMMIT under way finishes, then asyncio.timeout turns
    # the cancellation into TimeoutError; an on_commit hook is how the caller learns of it.
    in_commit = asyncio.Event()
    committed: list[str] = []

    def wait_in_commit(session: Session) -> None:
        in_commit.set()
        await_only(asyncio.sleep(0.3))  # the COMMIT's answer is late: the timeout strikes

    @adb.transactional
    async def place_order() -> None:
        adb.session.add(Item(name="committed-anyway"))
        adb.on_commit(lambda: committed.append("order placed"))

    event.listen(adb.session_class, "before_commit", wait_in_commit)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await place_order()
    finally:
        event.remove(adb.session_class, "before_commit", wait_in_commit)
    assert in_commit.is_set()
    assert committed == ["order placed"]
    assert committed_names(observer) == ["committed-anyway"]
    assert async_checked_out(adb) == 0


async def test_a_cancellation_during_a_commit_that_fails_rolls_back_and_keeps_the_error(
    adb: Database, observer: sa.Engine
) -> None:
    units = []

    async def work() -> None:
        async with adb.unit_of_work() as uow:
            units.append(uow)
            adb.session.add(Item(name="taken"))  # flushed by COMMIT, which fails

    async with adb.unit_of_work():
        adb.session.add(Item(name="taken"))
    cancelled = await cancel_during_commit(adb, work)
    assert isinstance(cancelled.__context__, sa.exc.IntegrityError)
    assert units[0].outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == ["taken"]
    assert async_checked_out(adb) == 0


async def test_a_failing_commit_rolls_back_and_raises_the_error(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work():
        adb.session.add(Item(name="taken"))
    with pytest.raises(sa.exc.IntegrityError):
        async with adb.unit_of_work() as uow:
            adb.session.add(Item(name="taken"))  # flushed by COMMIT, which fails
    assert uow.outcome is Outcome.ROLLED_BACK
    assert committed_names(observer) == ["taken"]
    assert async_checked_out(adb) == 0


async def test_a_caught_failed_flush_makes_the_unit_raise_unexpected_rollback(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work():
        adb.session.add(Item(name="taken"))
    with pytest.raises(UnexpectedRollback, match="NESTED"):
        async with adb.unit_of_work() as uow:
            adb.session.add(Item(name="kept?"))
            await adb.async_session.flush()
            adb.session.add(Item(name="taken"))
            try:
                await adb.async_session.flush()
            except sa.exc.IntegrityError:
                pass
    assert uow.outcome is Outcome.DOOMED
    assert committed_names(observer) == ["taken"]


# -- the ambient session -----------------------------------------------------------------------


async def test_db_session_outside_any_unit_raises_no_active_unit_of_work(adb: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="outside a unit of work"):
        await adb.async_session.execute(sa.select(1))
    with pytest.raises(NoActiveUnitOfWork):
        adb.async_session  # noqa: B018


async def test_the_session_is_refused_after_the_unit_ends(adb: Database) -> None:
    async with adb.unit_of_work() as uow:
        pass
    with pytest.raises(UnitOfWorkError, match="ended"):
        uow.session  # noqa: B018


async def test_the_async_session_is_refused_after_the_unit_ends(adb: Database) -> None:
    async with adb.unit_of_work() as uow:
        pass
    with pytest.raises(UnitOfWorkError, match="ended"):
        uow.async_session  # noqa: B018


async def test_the_async_session_of_a_unit_without_a_transaction_says_how_to_open_one(
    adb: Database,
) -> None:
    async with adb.unit_of_work(propagation=Propagation.SUPPORTS) as uow:
        with pytest.raises(NoActiveUnitOfWork, match="propagation=SUPPORTS has no unit"):
            uow.async_session  # noqa: B018


def test_async_with_outside_an_asyncio_task_is_refused_and_names_with(db: Database) -> None:
    # As under another event loop (trio): the coroutine runs, but no asyncio task runs it.
    entering = db.unit_of_work().__aenter__()
    with pytest.raises(UnitOfWorkError, match="needs a running asyncio task"):
        entering.send(None)
    assert db.current is None


def test_an_async_unit_cannot_join_the_sync_unit_of_its_thread(
    db: Database, observer: sa.Engine
) -> None:
    async def service() -> None:
        async with db.unit_of_work():
            pass

    with db.unit_of_work():
        db.session.add(Item(name="sync"))
        with pytest.raises(UnitOfWorkError, match="REQUIRES_NEW") as raised:
            asyncio.run(service())
    assert "cannot join the synchronous unit" in str(raised.value)
    assert committed_names(observer) == ["sync"]


async def test_commit_rollback_and_close_of_the_unit_session_are_refused(adb: Database) -> None:
    async with adb.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="commits by itself"):
            await adb.async_session.commit()
        with pytest.raises(UnitOfWorkError, match="going to commit"):
            await adb.async_session.rollback()
        with pytest.raises(UnitOfWorkError, match="closes its session"):
            await adb.async_session.close()


async def test_a_unit_that_runs_no_sql_never_checks_out_a_connection(adb: Database) -> None:
    connects: list[object] = []
    engine = adb.async_engine.sync_engine

    def count(*args: object) -> None:
        connects.append(args)

    event.listen(engine, "checkout", count)
    try:
        async with adb.unit_of_work() as uow:
            assert isinstance(uow.session, AsyncSession)
        assert connects == []
        async with adb.unit_of_work():
            await adb.async_session.execute(sa.select(1))
        assert len(connects) == 1
    finally:
        event.remove(engine, "checkout", count)


async def test_counters_count_outermost_async_units(adb: Database) -> None:
    before = adb.stats
    async with adb.unit_of_work():
        await adb.async_session.execute(sa.select(1))
        async with adb.unit_of_work():
            pass
    async with adb.unit_of_work(read_only=True):
        await adb.async_session.execute(sa.select(1))
    with pytest.raises(Boom):
        async with adb.unit_of_work():
            raise Boom
    after = adb.stats
    assert after.started - before.started == 3
    assert after.committed - before.committed == 1
    assert after.read_only - before.read_only == 1
    assert after.rolled_back - before.rolled_back == 1


# -- propagation -------------------------------------------------------------------------------


async def test_required_joins_and_only_the_outermost_commits(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work() as outer:
        async with adb.unit_of_work() as inner:
            assert inner.kind is UnitKind.JOINED
            assert inner.session is outer.session
            adb.session.add(Item(name="inner"))
            await adb.async_session.flush()
        assert committed_names(observer) == []
    assert committed_names(observer) == ["inner"]


async def test_nested_failure_undoes_only_its_savepoint(
    adb: Database, observer: sa.Engine
) -> None:
    async with adb.unit_of_work():
        adb.session.add(Item(name="outer"))
        with pytest.raises(Boom):
            async with adb.unit_of_work(propagation=Propagation.NESTED) as nested:
                assert nested.kind is UnitKind.SAVEPOINT
                adb.session.add(Item(name="nested"))
                await adb.async_session.flush()
                raise Boom
        async with adb.unit_of_work(propagation=Propagation.NESTED):
            adb.session.add(Item(name="kept"))
    assert committed_names(observer) == ["kept", "outer"]


async def test_requires_new_commits_on_its_own_when_the_outer_unit_fails(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    # On SQLite a writer cannot start inside a writer of the same thread (docs/sqlite.md).
    outer_read_only = backend_name == "sqlite"
    with pytest.raises(Boom):
        async with adb.unit_of_work(read_only=outer_read_only) as outer:
            await adb.async_session.execute(sa.select(1))
            async with adb.unit_of_work(propagation=Propagation.REQUIRES_NEW) as inner:
                assert inner.session is not outer.session
                adb.session.add(Item(name="independent"))
            assert committed_names(observer) == ["independent"]
            raise Boom
    assert async_checked_out(adb) == 0


async def test_mandatory_needs_an_active_unit(adb: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="MANDATORY"):
        async with adb.unit_of_work(propagation=Propagation.MANDATORY):
            pass
    async with adb.unit_of_work() as outer:
        async with adb.unit_of_work(propagation=Propagation.MANDATORY) as inner:
            assert inner.session is outer.session


async def test_supports_not_supported_and_never_run_without_a_transaction(
    adb: Database,
) -> None:
    async with adb.unit_of_work(propagation=Propagation.SUPPORTS) as alone:
        assert alone.kind is UnitKind.NONE
        with pytest.raises(NoActiveUnitOfWork):
            alone.session  # noqa: B018
    async with adb.unit_of_work() as outer:
        async with adb.unit_of_work(propagation=Propagation.SUPPORTS) as joined:
            assert joined.session is outer.session
        async with adb.unit_of_work(propagation=Propagation.NOT_SUPPORTED) as none:
            assert none.kind is UnitKind.NONE
            with pytest.raises(NoActiveUnitOfWork):
                await adb.async_session.execute(sa.select(1))
        with pytest.raises(UnitOfWorkError, match="NEVER"):
            async with adb.unit_of_work(propagation=Propagation.NEVER):
                pass
    async with adb.unit_of_work(propagation=Propagation.NEVER) as never:
        assert never.outcome is None
    assert never.outcome is Outcome.NO_TRANSACTION


async def test_a_joined_failure_caught_by_the_caller_dooms_the_outer_unit(
    adb: Database, observer: sa.Engine
) -> None:
    @adb.transactional
    async def fail() -> None:
        adb.session.add(Item(name="inner"))
        raise Boom

    with pytest.raises(UnexpectedRollback, match="NESTED") as raised:
        async with adb.unit_of_work() as uow:
            adb.session.add(Item(name="outer"))
            try:
                await fail()
            except Boom:
                pass
    assert isinstance(raised.value.__cause__, Boom)
    assert uow.outcome is Outcome.DOOMED
    assert committed_names(observer) == []


async def test_units_ended_out_of_order_are_invalidated_and_roll_back(
    adb: Database, observer: sa.Engine
) -> None:
    outer = adb.unit_of_work()
    inner = adb.unit_of_work(propagation=Propagation.NESTED)
    await outer.__aenter__()
    adb.session.add(Item(name="never"))
    await inner.__aenter__()
    with pytest.raises(UnitOfWorkError, match="reverse order"):
        await outer.__aexit__(None, None, None)
    with pytest.raises(UnitOfWorkError, match="invalidated"):
        await inner.__aexit__(None, None, None)
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


# -- hooks -------------------------------------------------------------------------------------


async def test_async_and_sync_commit_hooks_run_in_order_after_the_connection_is_returned(
    adb: Database,
) -> None:
    seen: list[tuple[str, int]] = []

    async def notify() -> None:
        await asyncio.sleep(0)
        seen.append(("async", async_checked_out(adb)))

    async with adb.unit_of_work() as uow:
        adb.session.add(Item(name="a"))
        await adb.async_session.flush()
        uow.on_commit(notify)
        uow.on_commit(lambda: seen.append(("sync", async_checked_out(adb))))
        uow.on_rollback(lambda: seen.append(("rollback", 0)))
        assert seen == []
    assert seen == [("async", 0), ("sync", 0)]


async def test_rollback_hooks_run_after_a_cancellation(adb: Database) -> None:
    seen: list[str] = []
    inside = asyncio.Event()

    async def rolled_back() -> None:
        seen.append("rolled back")

    async def work() -> None:
        async with adb.unit_of_work() as uow:
            uow.on_rollback(rolled_back)
            uow.on_commit(lambda: seen.append("commit"))
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["rolled back"]


async def test_a_failing_async_hook_is_logged_and_the_others_still_run(
    adb: Database, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def broken() -> None:
        raise Boom("hook failed")

    with caplog.at_level(logging.ERROR, logger="flask_uow"):
        async with adb.unit_of_work() as uow:
            uow.on_commit(broken)
            uow.on_commit(lambda: seen.append("after"))
    assert seen == ["after"]
    assert uow.outcome is Outcome.COMMITTED
    assert "hook failed" in caplog.text


async def test_a_coroutine_function_hook_is_refused_by_a_sync_unit(adb: Database) -> None:
    async def notify() -> None:
        return None

    def register() -> None:
        with adb.unit_of_work() as uow:
            uow.on_commit(notify)

    with pytest.raises(TypeError, match="async unit"):
        await asyncio.to_thread(register)


# -- read-only, isolation, retries -------------------------------------------------------------


async def test_a_read_only_unit_refuses_writes_and_never_commits(
    adb: Database, observer: sa.Engine
) -> None:
    with pytest.raises(ReadOnlyViolation):
        async with adb.unit_of_work(read_only=True):
            adb.session.add(Item(name="refused"))
            await adb.async_session.flush()
    async with adb.unit_of_work(read_only=True) as uow:
        assert list(await adb.async_session.scalars(sa.select(Item.name))) == []
    assert uow.outcome is Outcome.READ_ONLY
    assert committed_names(observer) == []


async def test_a_read_only_unit_runs_a_read_only_transaction_on_the_server(
    adb: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no READ ONLY transactions; the flush check above covers it")
    with pytest.raises(sa.exc.DBAPIError):
        async with adb.unit_of_work(read_only=True):
            await adb.async_session.execute(sa.insert(Item).values(name="bypass"))
    async with adb.unit_of_work():  # the pooled connection is read-write again
        await adb.async_session.execute(sa.insert(Item).values(name="allowed"))


async def test_isolation_level_applies_to_the_unit_and_not_to_the_next_one(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite is always SERIALIZABLE")
    async with adb.unit_of_work():
        adb.session.add(Item(name="row"))
    for _ in range(2):  # the same pooled connection, set and then back to the default
        async with adb.unit_of_work(isolation_level="serializable"):
            assert await _runs_serializable(adb, observer, backend_name)
        async with adb.unit_of_work():
            assert not await _runs_serializable(adb, observer, backend_name)


async def _runs_serializable(db: Database, observer: sa.Engine, backend_name: str) -> bool:
    if backend_name == "postgresql":
        level = (await db.async_session.execute(sa.text("SHOW transaction_isolation"))).scalar_one()
        return str(level) == "serializable"
    # InnoDB reads take shared locks only at SERIALIZABLE: a writer elsewhere must wait.
    (await db.async_session.execute(sa.select(Item.id))).all()
    with observer.connect() as other:
        other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        try:
            other.execute(sa.update(Item).values(name="changed"))
        except sa.exc.OperationalError as error:
            assert error.orig is not None and error.orig.args[0] == 1205
            return True
        finally:
            other.rollback()
    return False


async def test_a_joined_unit_asking_for_another_isolation_level_is_refused(
    adb: Database,
) -> None:
    async with adb.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="isolation level cannot change"):
            async with adb.unit_of_work(isolation_level="SERIALIZABLE"):
                pass


async def test_a_transient_error_is_retried_with_an_async_sleep(
    adb: Database, observer: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_uow import _decorate

    waits: list[float] = []

    async def no_wait(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(_decorate, "async_sleep", no_wait)
    calls: list[int] = []

    @adb.transactional(retries=2)
    async def insert() -> str:
        calls.append(1)
        adb.session.add(Item(name=f"attempt-{len(calls)}"))
        await adb.async_session.flush()
        if len(calls) < 3:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return "done"

    assert await insert() == "done"
    assert len(calls) == 3
    assert len(waits) == 2
    assert adb.stats.retried == 2
    assert committed_names(observer) == ["attempt-3"]


async def test_each_retry_of_a_decorated_coroutine_is_a_unit_numbered_by_its_attempt(
    adb: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_uow import _decorate

    async def no_wait(delay: float) -> None:
        pass

    monkeypatch.setattr(_decorate, "async_sleep", no_wait)
    seen: list[tuple[int, int]] = []

    @adb.transactional(retries=2)
    async def insert() -> None:
        unit = adb.current
        assert unit is not None
        seen.append((unit.attempt, unit.retries_left))
        if len(seen) < 3:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))

    await insert()
    assert seen == [(1, 2), (2, 1), (3, 0)]


async def test_a_task_cancelled_while_waiting_to_retry_runs_its_last_attempts_rollback_hooks(
    adb: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_uow import _decorate

    waiting = asyncio.Event()

    async def wait_until_cancelled(delay: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(_decorate, "async_sleep", wait_until_cancelled)
    hooks: list[str] = []

    async def rolled_back() -> None:
        hooks.append("rollback")

    @adb.transactional(retries=2)
    async def insert() -> None:
        unit = adb.current
        assert unit is not None
        unit.on_rollback(rolled_back)
        unit.on_commit(lambda: hooks.append("commit"))
        adb.session.add(Item(name="locked"))
        await adb.async_session.flush()
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    task = asyncio.create_task(insert())
    await waiting.wait()
    assert hooks == []  # held back while a retry may still come
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks == ["rollback"]  # the retry was called off: that attempt was the last
    assert async_checked_out(adb) == 0


async def test_a_task_cancelled_while_a_failed_attempt_ends_runs_its_rollback_hooks_once(
    adb: Database,
) -> None:
    attempts: list[str] = []
    hooks: list[str] = []
    task: asyncio.Task[None] | None = None

    def cancel_the_task(connection: sa.Connection) -> None:
        assert task is not None
        task.cancel()  # arrives while the unit ends: the ROLLBACK finishes first

    @adb.transactional(retries=2)
    async def insert() -> None:
        attempts.append("attempt")
        unit = adb.current
        assert unit is not None
        unit.on_rollback(lambda: hooks.append("rollback"))
        adb.session.add(Item(name="locked"))
        await adb.async_session.flush()
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    event.listen(adb.async_engine.sync_engine, "rollback", cancel_the_task)
    try:
        task = asyncio.create_task(insert())
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(adb.async_engine.sync_engine, "rollback", cancel_the_task)
    assert attempts == ["attempt"]
    assert hooks == ["rollback"]
    assert async_checked_out(adb) == 0


async def test_application_errors_are_not_retried(adb: Database) -> None:
    calls: list[int] = []

    @adb.transactional(retries=3)
    async def fail() -> None:
        calls.append(1)
        raise Boom

    with pytest.raises(Boom):
        await fail()
    assert calls == [1]


# -- the decorator -----------------------------------------------------------------------------


async def test_a_decorated_async_method_runs_in_a_unit_and_keeps_its_name(
    adb: Database, observer: sa.Engine
) -> None:
    class Service:
        @adb.transactional
        async def create(self, name: str) -> int:
            item = Item(name=name)
            adb.session.add(item)
            await adb.async_session.flush()
            return item.id

        @adb.transactional(read_only=True)
        async def count(self) -> int:
            return len(list(await adb.async_session.scalars(sa.select(Item.id))))

    service = Service()
    assert Service.create.__name__ == "create"
    assert isinstance(await service.create("from-method"), int)
    assert await service.count() == 1
    assert committed_names(observer) == ["from-method"]


# -- tasks and threads -------------------------------------------------------------------------


async def test_a_gathered_task_using_the_parents_session_is_refused_with_the_fix(
    adb: Database,
) -> None:
    async def child() -> None:
        await adb.async_session.execute(sa.select(1))

    async with adb.unit_of_work() as uow:
        with pytest.raises(UnitOfWorkError, match="REQUIRES_NEW") as raised:
            await asyncio.gather(child())
        assert "another task" in str(raised.value)
        with pytest.raises(UnitOfWorkError, match="await the work"):
            await asyncio.gather(_use(lambda: uow.session))
        with pytest.raises(UnitOfWorkError, match="another task"):
            await asyncio.gather(_use(lambda: adb.session.get(Item, 1)))
    assert uow.outcome is Outcome.COMMITTED


async def _use(get: Callable[[], object]) -> None:
    get()


async def test_a_required_unit_entered_in_a_task_group_child_is_refused(adb: Database) -> None:
    async def child() -> None:
        async with adb.unit_of_work():
            pass

    async with adb.unit_of_work():
        with pytest.raises(ExceptionGroup) as raised:
            async with asyncio.TaskGroup() as group:
                group.create_task(child())
    (error,) = raised.value.exceptions
    assert isinstance(error, UnitOfWorkError)
    assert "REQUIRES_NEW" in str(error)


async def test_a_child_task_with_requires_new_gets_its_own_session(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    @adb.transactional(propagation=Propagation.REQUIRES_NEW)
    async def child(name: str) -> int:
        adb.session.add(Item(name=name))
        await adb.async_session.flush()
        return id(adb.session)

    read_only = backend_name == "sqlite"  # one writer at a time: the parent only reads
    async with adb.unit_of_work(read_only=read_only) as uow:
        await adb.async_session.execute(sa.select(1))
        async with asyncio.TaskGroup() as group:
            first = group.create_task(child("first"))
            second = group.create_task(child("second"))
        assert first.result() != id(uow.session) != second.result()
    assert committed_names(observer) == ["first", "second"]


async def test_a_sync_unit_inside_an_async_unit_is_refused_with_advice(adb: Database) -> None:
    async with adb.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="to_thread"):
            with adb.unit_of_work():
                pass


async def test_a_worker_thread_never_shares_the_units_session(
    adb: Database, observer: sa.Engine
) -> None:
    def use_session() -> None:
        adb.session.execute(sa.select(1))

    def own_unit() -> None:
        with adb.unit_of_work(propagation=Propagation.REQUIRES_NEW):
            adb.session.add(Item(name="from-thread"))

    async with adb.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="another thread"):
            await asyncio.to_thread(use_session)
        await asyncio.to_thread(own_unit)
    assert committed_names(observer) == ["from-thread"]


async def test_concurrent_tasks_each_in_their_own_unit_all_commit(
    adb: Database, observer: sa.Engine
) -> None:
    @adb.transactional
    async def insert(number: int) -> None:
        adb.session.add(Item(name=f"task-{number:02d}"))
        await adb.async_session.flush()
        await asyncio.sleep(0)

    await asyncio.gather(*(insert(number) for number in range(20)))
    assert committed_names(observer) == [f"task-{number:02d}" for number in range(20)]
    assert async_checked_out(adb) == 0


async def test_the_async_url_is_derived_from_the_sync_one(adb: Database) -> None:
    driver = adb.async_engine.dialect.driver
    assert driver in ("aiosqlite", "psycopg", "aiomysql")
    assert adb.async_engine.dialect.is_async


# -- testing helpers ---------------------------------------------------------------------------


async def test_isolated_async_undoes_every_unit_and_each_unit_still_commits_or_rolls_back(
    adb: Database, observer: sa.Engine
) -> None:
    from flask_uow.testing import isolated_async

    seen: list[str] = []
    async with isolated_async(adb):
        async with adb.unit_of_work() as first:
            adb.session.add(Item(name="first"))
            first.on_commit(lambda: seen.append("committed"))
        with pytest.raises(Boom):
            async with adb.unit_of_work():
                adb.session.add(Item(name="undone"))
                await adb.async_session.flush()
                raise Boom
        async with adb.unit_of_work(read_only=True):
            names = list(await adb.async_session.scalars(sa.select(Item.name)))
        assert names == ["first"]
        assert seen == ["committed"]
        with pytest.raises(UnitOfWorkError, match="isolated"):
            await asyncio.to_thread(_sync_unit, adb)
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


def _sync_unit(db: Database) -> None:
    with db.unit_of_work():
        db.session.execute(sa.select(1))


async def test_isolated_async_rolls_back_a_leaked_unit_and_says_where_it_was_opened(
    adb: Database, observer: sa.Engine
) -> None:
    from flask_uow.testing import isolated_async

    with pytest.raises(UnitOfWorkError, match="test_async.py"):
        async with isolated_async(adb):
            await adb.unit_of_work().__aenter__()
            adb.session.add(Item(name="leaked"))
    assert committed_names(observer) == []
    assert async_checked_out(adb) == 0


async def test_decorated_coroutine_functions_keep_their_types(adb: Database) -> None:
    @adb.transactional
    async def bare(x: int) -> str:
        return str(x)

    @adb.transactional(retries=2, read_only=True)
    async def configured(x: int, y: str = "") -> list[int]:
        return [x]

    assert_type(await bare(1), str)
    assert_type(await configured(1, y="a"), list[int])
    assert inspect.iscoroutinefunction(bare)
    assert await bare(2) == "2"
    assert await configured(3) == [3]
    async with adb.unit_of_work() as uow:
        assert_type(uow.session, AsyncUnitSession)


async def test_a_connection_lost_during_commit_raises_outcome_unknown_and_runs_neither_hook(
    adb: Database, backend_name: str
) -> None:
    from .test_outcomes import connection_lost_during_commit

    hooks: list[str] = []
    unit = adb.unit_of_work()
    with connection_lost_during_commit(adb, backend_name, adb.async_engine.sync_engine):
        with pytest.raises(CommitOutcomeUnknown, match="not retried"):
            async with unit as uow:
                uow.on_commit(lambda: hooks.append("commit"))
                uow.on_rollback(lambda: hooks.append("rollback"))
                uow.on_outcome_unknown(lambda: hooks.append("unknown"))
                adb.session.add(Item(name="maybe"))
    assert hooks == ["unknown"]
    assert unit.outcome is Outcome.OUTCOME_UNKNOWN
    assert async_checked_out(adb) == 0
