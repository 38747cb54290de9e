"""The model of ``test_stateful.py`` with the faults of issue 18 among its steps.

``UnitTrees`` plus: an interruption (a real SIGINT in sync code, a cancellation of the task
at a random await in async code) that strikes anywhere in the innermost unit's work and
leaves through every open unit; interruptions at COMMIT, whether it landed or not (an
unknown outcome, resolved by looking at the database), and the caller's cancellation while
an async COMMIT is under way; a unit whose first statement streams (``stream_results``,
``yield_per``, ``AsyncSession.stream()``), with and without a statement timeout; read-only
units that fail after changing their connection's session; and a context copied into
another thread while units are open, whose thread must not use or end them. After every
step the invariants of ``UnitTrees`` hold: what the units reported is what the database
holds, hooks ran exactly as their outcomes say, only open transactions hold connections,
and the innermost open unit is the current one.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from sqlalchemy import event

from flask_uow import Database, NoActiveUnitOfWork, Outcome, Propagation, UnitOfWorkError

from .conftest import checked_out, committed_names
from .models import Item
from .reliability._scale import scaled
from .stateful_runners import MAX_DEPTH, AsyncRunner, Boom, Frame, ModelUnit, SyncRunner
from .test_stateful import UnitTrees, run_model

STATEMENT_TIMEOUT = 30
"""Seconds; long enough never to expire: the model checks it is in effect, not that it fires."""


def interrupt_here() -> None:
    """A real SIGINT to this (main) thread, which raises KeyboardInterrupt right here; a
    KeyboardInterrupt raised directly where SIGINT has another handler or cannot be sent."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundary, in this loop
            pass
    raise KeyboardInterrupt  # pragma: no cover - the signal's handler raised first


def cancel_after(task: asyncio.Task[Any], ticks: int) -> None:
    """Cancel ``task`` after ``ticks`` turns of the loop: at whatever it awaits then."""
    loop = asyncio.get_running_loop()

    def tick(left: int) -> None:
        if left <= 0:
            task.cancel()
        else:
            loop.call_soon(tick, left - 1)

    tick(ticks)


class FaultyUnitTrees(UnitTrees):
    def __init__(self) -> None:
        super().__init__()
        self.is_postgresql = self.backend == "postgresql"

    # -- (a) an interruption anywhere in the innermost unit's work --------------------------

    @precondition(lambda self: bool(self.stack) and self.stack[-1].kind != "none")
    @rule(at=st.integers(min_value=0, max_value=12))
    def interrupt_the_work(self, at: int) -> None:
        """Writes and reads in the innermost unit; an interruption strikes at some point
        and is not caught: it leaves through every open unit, which all roll back."""
        self.runner.run(lambda: self._interrupt_the_work(at))

    async def _interrupt_the_work(self, at: int) -> None:
        top = self.stack[-1]
        assert top.root is not None
        engine = self.runner.engine(self.db)
        statements = 0
        task = asyncio.current_task() if self.runner.is_async else None

        def before_statement(*_: object) -> None:
            nonlocal statements
            statements += 1
            if task is None and statements == at % 4 + 1:
                interrupt_here()

        async def work() -> None:
            for _ in range(2):
                if not top.root.read_only:  # type: ignore[union-attr]
                    self.db.session.add(Item(name=f"interrupted-{next(self.counter)}"))
                    await self.runner.flush(self.db)
                await self.runner.execute(self.db, sa.select(sa.func.count()).select_from(Item))
            if task is None:
                interrupt_here()  # not at a statement: in the application's code
            while True:  # the cancellation is on its way
                await asyncio.sleep(0)

        interruption: BaseException | None = None
        event.listen(engine, "before_cursor_execute", before_statement)
        try:
            if task is not None:
                cancel_after(task, at)
            await work()
        except (KeyboardInterrupt, asyncio.CancelledError) as error:
            interruption = error
        finally:
            event.remove(engine, "before_cursor_execute", before_statement)
        assert interruption is not None
        if task is not None:
            assert task.uncancel() == 0
        while self.stack:
            await self._exit_step(raise_error=True, error=interruption)
        if self.is_sqlite and task is not None:
            # A statement's cursor that the cancellation cut off holds SQLite's locks until
            # it is freed: it sits in the traceback's reference cycle.
            del interruption
            gc.collect()

    # -- interruptions at COMMIT ------------------------------------------------------------

    async def _with_a_writer(self, end: Callable[[], Awaitable[None]]) -> None:
        """Unless the innermost unit would send COMMIT, open a unit of its own (REQUIRES_NEW)
        with hooks that writes a row; then ``end`` it."""
        if not self._innermost_would_send_commit():
            unit = self.db.unit_of_work(propagation=Propagation.REQUIRES_NEW)
            if self._sqlite_would_wait_for_itself(read_only=False):
                with pytest.raises(UnitOfWorkError):
                    await self.runner.enter(unit)
                return
            assert await self.runner.enter(unit) is unit
            root = Frame(read_only=False, connected=True)
            self.stack.append(ModelUnit(unit, "outermost", root, root))
            for on_commit in (True, False):
                await self._add_hook(on_commit)
            await self._write()
        await end()

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule()
    def interrupt_before_commit_lands(self) -> None:
        self.runner.run(lambda: self._with_a_writer(self._interrupt_before_commit_lands))

    async def _interrupt_before_commit_lands(self) -> None:
        """The interruption strikes as COMMIT is about to go out, and it never does: the unit
        cannot tell, so the outcome is unknown and no hook runs; the database says what
        happened (nothing), as a caller resolving an unknown outcome would look it up."""
        top = self.stack.pop()
        assert top.frame is not None
        interruption = self.runner.interruption()
        engine = self.runner.engine(self.db)

        def interrupt(_: sa.Connection) -> None:
            raise interruption

        event.listen(engine, "commit", interrupt)
        try:
            with pytest.raises(type(interruption)):
                await self.runner.exit(top.real, None)
        finally:
            event.remove(engine, "commit", interrupt)
        assert top.real.outcome is Outcome.OUTCOME_UNKNOWN
        stored = set(committed_names(self.observer)) - self.committed
        assert stored in (set(), set(top.frame.names))  # all or nothing
        assert stored == set()
        if self.is_sqlite and self.runner.is_async:
            gc.collect()

    @precondition(lambda self: self.runner.is_async and len(self.stack) < MAX_DEPTH)
    @rule()
    def cancel_the_caller_at_commit(self) -> None:
        self.runner.run(lambda: self._with_a_writer(self._cancel_the_caller_at_commit))

    async def _cancel_the_caller_at_commit(self) -> None:
        """The task that leaves ``async with`` is cancelled while COMMIT is under way: the
        COMMIT finishes, the unit commits and runs its on_commit hooks, then the
        cancellation goes on."""
        top = self.stack.pop()
        assert top.frame is not None
        caller = asyncio.current_task()
        assert caller is not None
        engine = self.runner.engine(self.db)

        def cancel_the_caller(_: sa.Connection) -> None:
            caller.cancel()

        event.listen(engine, "commit", cancel_the_caller)
        try:
            with pytest.raises(asyncio.CancelledError):
                await self.runner.exit(top.real, None)
        finally:
            event.remove(engine, "commit", cancel_the_caller)
            caller.uncancel()
        assert top.real.outcome is Outcome.COMMITTED
        self.committed.update(top.frame.names)
        self.expected_hooks.extend(top.frame.commit_hooks)
        assert committed_names(self.observer) == sorted(self.committed)

    @precondition(lambda self: not self.runner.is_async and len(self.stack) < MAX_DEPTH)
    @rule()
    def interrupt_the_last_flush(self) -> None:
        self.runner.run(lambda: self._with_a_writer(self._interrupt_the_last_flush))

    async def _interrupt_the_last_flush(self) -> None:
        """A SIGINT at the INSERT that COMMIT flushes first: COMMIT was never sent, so the
        unit rolls back (on_rollback hooks) and the KeyboardInterrupt goes on."""
        top = self.stack.pop()
        assert top.frame is not None
        self.db.session.add(Item(name=f"unflushed-{next(self.counter)}"))

        def interrupt(*_: object) -> None:
            interrupt_here()

        engine = self.runner.engine(self.db)
        event.listen(engine, "before_cursor_execute", interrupt)
        try:
            with pytest.raises(KeyboardInterrupt):
                await self.runner.exit(top.real, None)
        finally:
            event.remove(engine, "before_cursor_execute", interrupt)
        assert top.real.outcome is Outcome.ROLLED_BACK
        self.expected_hooks.extend(top.frame.rollback_hooks)
        assert committed_names(self.observer) == sorted(self.committed)

    @precondition(
        lambda self: (
            bool(self.stack)
            and (
                self.stack[-1].kind == "savepoint"
                or (
                    self.stack[-1].kind == "outermost"
                    and self.stack[-1].root is not None
                    and self.stack[-1].root.connected
                )
            )
        )
    )
    @rule()
    def interrupt_the_rollback(self) -> None:
        self.runner.run(self._interrupt_the_rollback)

    async def _interrupt_the_rollback(self) -> None:
        """The innermost unit fails, and an interruption strikes as its ROLLBACK (TO SAVEPOINT)
        goes out (a SIGINT; the cancellation of the task ending it, as asyncio.run() shutting
        down does): it still ends rolled back and runs its hooks, then the interruption goes
        on instead of the error. A savepoint so interrupted dooms its enclosing transaction;
        an async one loses it whole (the cancellation lands at the ROLLBACK TO's await, and
        SQLAlchemy drops the connection): every enclosing unit is doomed, and the connection
        is gone until the enclosing units run a statement again (in a new transaction, which
        their savepoints are not part of). A savepoint that never ran a statement sent no
        SAVEPOINT, so it sends no ROLLBACK TO: nothing is interrupted."""
        top = self.stack[-1]
        assert top.frame is not None and top.root is not None
        engine = self.runner.engine(self.db)
        name = "rollback_savepoint" if top.kind == "savepoint" else "rollback"
        sends = top.frame.connected  # its SAVEPOINT went out with its first statement
        struck: list[bool] = []

        def interrupt(*_: object) -> None:
            struck.append(True)
            if self.runner.is_async:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()  # lands at the ROLLBACK's await, which always suspends
            else:
                interrupt_here()

        interruption = KeyboardInterrupt if not self.runner.is_async else asyncio.CancelledError
        event.listen(engine, name, interrupt)
        try:
            if sends:
                with pytest.raises(interruption):
                    await self._exit_step(raise_error=True, error=Boom())
            else:
                await self._exit_step(raise_error=True, error=Boom())
        finally:
            event.remove(engine, name, interrupt)
        assert struck == ([True] if sends else [])
        assert top.real.outcome is Outcome.ROLLED_BACK
        if top.kind == "savepoint" and sends:
            frame = top.frame
            assert frame is not None and frame.parent is not None
            frame.parent.doomed = True
            if self.runner.is_async:  # the transaction is lost: all of it is doomed
                while frame.parent is not None:
                    frame = frame.parent
                    frame.doomed = frame.lost = True
                    frame.connected = False
        if self.is_sqlite and self.runner.is_async:
            gc.collect()

    # -- (b) a unit whose first statement streams --------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(how=st.sampled_from(["stream_results", "yield_per"]), timeout=st.booleans())
    def enter_with_a_streamed_first_statement(self, how: str, timeout: bool) -> None:
        """A unit of its own (REQUIRES_NEW) whose first statement streams; with a statement
        timeout, which must be in effect for the statements after it."""
        self.runner.run(lambda: self._enter_streaming(how, timeout))

    async def _enter_streaming(self, how: str, timeout: bool) -> None:
        unit = self.db.unit_of_work(
            propagation=Propagation.REQUIRES_NEW,
            statement_timeout=STATEMENT_TIMEOUT if timeout else None,
        )
        if self._sqlite_would_wait_for_itself(read_only=False):
            with pytest.raises(UnitOfWorkError):
                await self.runner.enter(unit)
            return
        assert await self.runner.enter(unit) is unit
        statement = sa.select(Item.name).order_by(Item.name)
        if self.runner.is_async:
            if how == "yield_per":
                statement = statement.execution_options(yield_per=2)
            result = await self.db.async_session.stream(statement)
            names = list(await result.scalars().all())
        else:
            options = {"stream_results": True} if how == "stream_results" else {"yield_per": 2}
            names = list(self.db.session.execute(statement, execution_options=options).scalars())
        assert names == sorted(self.committed)
        if timeout and self.is_postgresql:
            shown = await self._scalar(sa.text("SHOW statement_timeout"))
            assert shown == f"{STATEMENT_TIMEOUT}s", "the unit's statement_timeout is not applied"
        root = Frame(read_only=False, connected=True)
        self.stack.append(ModelUnit(unit, "outermost", root, root))

    async def _scalar(self, statement: sa.Executable) -> object:
        if self.runner.is_async:
            return await self.db.async_session.scalar(statement)
        return self.db.session.scalar(statement)

    # -- (c) read-only units that fail -------------------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(interrupted=st.booleans())
    def fail_a_read_only_unit(self, interrupted: bool) -> None:
        self.runner.run(lambda: self._fail_a_read_only_unit(interrupted))

    async def _fail_a_read_only_unit(self, interrupted: bool) -> None:
        """A read-only unit of its own reads, changes its connection's session (PostgreSQL:
        ``application_name``) and raises: it rolls back, runs on_rollback hooks only, and its
        connection goes back to the pool with nothing of the unit left on it."""
        unit = self.db.unit_of_work(propagation=Propagation.REQUIRES_NEW, read_only=True)
        assert await self.runner.enter(unit) is unit
        label = f"read-only-{next(self.counter)}"
        ran: list[str] = []
        unit.on_commit(self.runner.hook(lambda: ran.append("on_commit")))
        unit.on_rollback(self.runner.hook(lambda: ran.append("on_rollback")))
        await self.runner.execute(self.db, sa.select(sa.func.count()).select_from(Item))
        raw = await self._dbapi_connection()
        if self.is_postgresql:
            await self.runner.execute(
                self.db, sa.text(f"SELECT set_config('application_name', '{label}', false)")
            )
        failure = self.runner.interruption() if interrupted else Boom()
        assert await self.runner.exit(unit, failure) is None
        assert unit.outcome is Outcome.ROLLED_BACK
        assert ran == ["on_rollback"]
        if self.is_postgresql:
            assert await self._application_name(raw) != label, "the failed unit's SET survived"

    async def _dbapi_connection(self) -> Any:
        if self.runner.is_async:
            connection = await self.db.async_session.connection()
            return (await connection.get_raw_connection()).dbapi_connection
        return self.db.session.connection().connection.dbapi_connection

    async def _application_name(self, raw: Any) -> str:
        """``application_name`` on the pooled DBAPI connection the failed unit used."""
        if self.runner.is_async:
            driver = raw.driver_connection
            cursor = await driver.execute("SHOW application_name")
            (name,) = await cursor.fetchone()
            await driver.rollback()
            return str(name)
        cursor = raw.cursor()
        cursor.execute("SHOW application_name")
        (name,) = cursor.fetchone()
        raw.rollback()
        return str(name)

    # -- (d) a context copied into another thread -------------------------------------------

    @rule(propagation=st.sampled_from(Propagation))
    def copy_the_context_into_a_thread(self, propagation: Propagation) -> None:
        self.runner.run(lambda: self._copy_the_context_into_a_thread(propagation))

    async def _copy_the_context_into_a_thread(self, propagation: Propagation) -> None:
        """A thread runs in a copy of this context while units are open here: none of them is
        its (``db.current`` is None, ``db.session`` refuses), it cannot join them, and a unit
        of its own (REQUIRES_NEW, or REQUIRED with none open) commits on its own."""
        context = contextvars.copy_context()
        owner_open = bool(self.stack)
        # A thread's own unit writes on PostgreSQL; elsewhere it reads (SQLite has one
        # writer, and MariaDB's gap locks of this thread's open units could hold it).
        writes = self.is_postgresql
        name = f"thread-{next(self.counter)}"
        outcome: list[object] = []

        def job() -> None:
            assert self.db.current is None
            with pytest.raises(NoActiveUnitOfWork):
                self.db.session.add(Item(name="never"))
            ran: list[str] = []
            unit = self.db.unit_of_work(propagation=propagation, read_only=not writes)
            own = propagation is Propagation.REQUIRES_NEW or (
                propagation in (Propagation.REQUIRED, Propagation.NESTED) and not owner_open
            )
            if propagation in (Propagation.REQUIRED, Propagation.NESTED, Propagation.MANDATORY):
                if owner_open:
                    with pytest.raises(UnitOfWorkError, match="opened in another thread"):
                        unit.__enter__()
                    outcome.append("refused")
                    return
                if propagation is Propagation.MANDATORY:
                    with pytest.raises(NoActiveUnitOfWork):
                        unit.__enter__()
                    outcome.append("refused")
                    return
            with unit:
                assert self.db.current is (unit if own else None)
                if own:
                    unit.on_commit(lambda: ran.append("on_commit"))
                    if writes:
                        self.db.session.add(Item(name=name))
                    else:
                        self.db.session.execute(sa.select(sa.func.count()).select_from(Item))
            assert unit.outcome in (
                (Outcome.COMMITTED if writes else Outcome.READ_ONLY)
                if own
                else Outcome.NO_TRANSACTION,
            )
            assert ran == (["on_commit"] if own else [])
            outcome.append("committed" if own and writes else "no write")

        def run() -> None:
            try:
                context.run(job)
            except BaseException as error:  # handed to the step
                outcome.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], str), outcome
        if outcome[0] == "committed":
            self.committed.add(name)
        if self.runner.is_async:  # the thread's sync units use the sync engine
            assert checked_out(self.db) == 0
        assert committed_names(self.observer) == sorted(self.committed)


def _run(
    runner: type[SyncRunner | AsyncRunner],
    db: Database,
    observer: sa.Engine,
    backend_name: str,
    max_examples: int,
) -> None:
    run_model(runner, db, observer, backend_name, max_examples=max_examples, model=FaultyUnitTrees)


def test_random_trees_of_units_with_faults_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    max_examples = scaled(40, 2000) if backend_name == "sqlite" else scaled(15, 600)
    _run(SyncRunner, db, observer, backend_name, max_examples)


def test_random_trees_of_async_units_with_faults_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    max_examples = scaled(20, 600) if backend_name == "sqlite" else scaled(8, 250)
    _run(AsyncRunner, db, observer, backend_name, max_examples)
