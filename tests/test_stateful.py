"""Random trees of units against a plain-Python model of what must happen, sync and async.

Each step enters a unit (any propagation, read-only or not), writes, reads, registers
hooks, asks for rollback, calls a decorated service with retries that fails transiently,
or ends the innermost unit normally or with an exception. The model predicts the rows
committed, the hooks run, the exceptions raised, what ``__exit__`` returns and the number
of connections checked out; every step compares it with the real database.

One model, two runners. ``SyncRunner`` enters units with ``with`` semantics
(``__enter__``/``__exit__``, ``@db.transactional`` on a ``def``, plain hooks). ``AsyncRunner``
runs every step in one long-lived task on an event loop of its own (async units belong to the
task that entered them): ``__aenter__``/``__aexit__``, ``@db.transactional`` on an ``async
def``, coroutine hooks, a cancellation as well as an exception through a unit; and one more
step, a child task that opens its own units and is cancelled at a random point. The model's
steps are coroutines written once: under ``SyncRunner`` they never suspend, and run to the end
in one ``send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import event

from flask_uow import (
    Database,
    NoActiveUnitOfWork,
    Outcome,
    Propagation,
    ReadOnlyViolation,
    UnexpectedRollback,
    UnitOfWorkError,
)

from .conftest import committed_names
from .models import Item
from .reliability._scale import scaled
from .stateful_runners import (
    MAX_DEPTH,
    ROW_NAMES,
    AsyncRunner,
    Frame,
    ModelUnit,
    Runner,
    SyncRunner,
    machine_factory,
    transient_error,
)


class UnitTrees(RuleBasedStateMachine):
    db: Database
    observer: sa.Engine
    backend: str
    is_sqlite: bool
    is_wal: bool
    runner_class: type[Runner]

    def __init__(self) -> None:
        super().__init__()
        with self.db.unit_of_work():
            self.db.session.execute(sa.delete(Item))
        self.stack: list[ModelUnit] = []
        self.committed: set[str] = set()
        self.expected_hooks: list[str] = []
        self.actual_hooks: list[str] = []
        self.counter = ROW_NAMES
        self.runner = self.runner_class()

    def _active(self) -> ModelUnit | None:
        """The unit a new one would join: the innermost, unless it runs with no transaction."""
        if self.stack and self.stack[-1].kind != "none":
            return self.stack[-1]
        return None

    # -- entering ------------------------------------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(propagation=st.sampled_from(Propagation), read_only=st.booleans())
    def enter(self, propagation: Propagation, read_only: bool) -> None:
        self.runner.run(lambda: self._enter(propagation, read_only))

    async def _enter(self, propagation: Propagation, read_only: bool) -> None:
        active = self._active()
        unit = self.db.unit_of_work(propagation=propagation, read_only=read_only)
        kind = self._kind_for(propagation, active)
        expected_error: type[BaseException] | None = None
        if propagation is Propagation.NEVER and active is not None:
            expected_error = UnitOfWorkError
        elif kind == "outermost" and propagation is Propagation.MANDATORY:
            expected_error = NoActiveUnitOfWork
        elif kind == "outermost" and self._sqlite_would_wait_for_itself(read_only):
            expected_error = UnitOfWorkError
        elif kind in ("savepoint", "joined") and active is not None:
            assert active.root is not None
            if active.root.read_only and not read_only:
                expected_error = ReadOnlyViolation
        if expected_error is not None:
            with pytest.raises(expected_error):
                await self.runner.enter(unit)
            return
        assert await self.runner.enter(unit) is unit
        if kind == "none":
            self.stack.append(ModelUnit(unit, "none", None, None))
        elif kind == "outermost":
            root = Frame(read_only=read_only)
            self.stack.append(ModelUnit(unit, "outermost", root, root))
        else:
            assert active is not None and active.frame is not None and active.root is not None
            if kind == "savepoint":
                frame = Frame(read_only=active.root.read_only, parent=active.frame)
                self.stack.append(ModelUnit(unit, "savepoint", frame, active.root))
            else:
                self.stack.append(ModelUnit(unit, "joined", active.frame, active.root))

    @staticmethod
    def _kind_for(propagation: Propagation, active: ModelUnit | None) -> str:
        if propagation in (Propagation.NOT_SUPPORTED, Propagation.NEVER):
            return "none"
        if propagation is Propagation.SUPPORTS:
            return "joined" if active is not None else "none"
        if active is None or propagation is Propagation.REQUIRES_NEW:
            return "outermost"
        return "savepoint" if propagation is Propagation.NESTED else "joined"

    def _sqlite_would_wait_for_itself(self, read_only: bool) -> bool:
        # Decided from the modes alone: a writer never starts inside an outer writer of the
        # same thread; inside an outer reader only in WAL mode, where readers don't block it.
        if not self.is_sqlite or read_only:
            return False
        return any(
            unit.kind == "outermost"
            and unit.root is not None
            and (not unit.root.read_only or not self.is_wal)
            for unit in self.stack
        )

    # -- work inside the innermost unit --------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def write(self) -> None:
        self.runner.run(self._write)

    async def _write(self) -> None:
        top = self.stack[-1]
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                self.db.session.add(Item(name="never"))
            return
        assert top.root is not None and top.frame is not None
        name = f"row-{next(self.counter)}"
        item = Item(name=name)
        self.db.session.add(item)
        if top.root.read_only:
            with pytest.raises(ReadOnlyViolation):
                await self.runner.flush(self.db)
            self.db.session.expunge(item)
            return
        await self.runner.flush(self.db)
        top.frame.names.append(name)
        top.frame.ran_a_statement()

    @precondition(lambda self: bool(self.stack))
    @rule()
    def read(self) -> None:
        self.runner.run(self._read)

    async def _read(self) -> None:
        top = self.stack[-1]
        statement = sa.select(sa.func.count()).select_from(Item)
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                await self.runner.execute(self.db, statement)
            return
        assert top.frame is not None
        await self.runner.execute(self.db, statement)
        top.frame.ran_a_statement()

    @precondition(lambda self: bool(self.stack))
    @rule(on_commit=st.booleans())
    def add_hook(self, on_commit: bool) -> None:
        self.runner.run(lambda: self._add_hook(on_commit))

    async def _add_hook(self, on_commit: bool) -> None:
        top = self.stack[-1]
        label = f"hook-{next(self.counter)}"
        hook = self.runner.hook(lambda: self.actual_hooks.append(label))
        register = top.real.on_commit if on_commit else top.real.on_rollback
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                register(hook)
            return
        assert top.frame is not None
        register(hook)
        (top.frame.commit_hooks if on_commit else top.frame.rollback_hooks).append(label)

    @precondition(lambda self: bool(self.stack))
    @rule()
    def set_rollback(self) -> None:
        self.runner.run(self._set_rollback)

    async def _set_rollback(self) -> None:
        top = self.stack[-1]
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                top.real.set_rollback()
            return
        top.real.set_rollback()
        top.rollback_requested = True

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(failures=st.integers(min_value=0, max_value=3))
    def call_with_retries(self, failures: int) -> None:
        """A @db.transactional(retries=2) service that fails transiently ``failures`` times."""
        self.runner.run(lambda: self._call_with_retries(failures))

    async def _call_with_retries(self, failures: int) -> None:
        active = self._active()
        name = f"row-{next(self.counter)}"
        attempts: list[int] = []

        async def body() -> None:
            attempts.append(1)
            self.db.session.add(Item(name=f"{name}-{len(attempts)}"))
            await self.runner.flush(self.db)
            if len(attempts) <= failures:
                raise transient_error()

        service = self.runner.service(self.db, 2, body)
        if active is not None:
            assert active.root is not None and active.frame is not None
            if active.root.read_only:
                with pytest.raises(ReadOnlyViolation):
                    await service()
                return
            # A joined call never retries: its failure dooms the transaction it joined.
            if failures:
                with pytest.raises(sa.exc.OperationalError):
                    await service()
                active.frame.doomed = True
            else:
                await service()
                active.frame.names.append(f"{name}-1")
            active.frame.ran_a_statement()
            assert len(attempts) == 1
            return
        if self._sqlite_would_wait_for_itself(read_only=False):
            with pytest.raises(UnitOfWorkError):
                await service()
            return
        if failures > 2:
            with pytest.raises(sa.exc.OperationalError):
                await service()
            assert len(attempts) == 3
        else:
            await service()
            assert len(attempts) == failures + 1
            self.committed.add(f"{name}-{failures + 1}")
        assert committed_names(self.observer) == sorted(self.committed)

    @precondition(lambda self: self.runner.is_async)
    @rule(depth=st.integers(min_value=1, max_value=3), ticks=st.integers(0, 12))
    def cancel_a_child_task(self, depth: int, ticks: int) -> None:
        """A task started inside the current units opens its own, writes, and is cancelled."""
        self.runner.run(lambda: self._cancel_a_child_task(depth, ticks))

    async def _cancel_a_child_task(self, depth: int, ticks: int) -> None:
        refused = self._sqlite_would_wait_for_itself(read_only=False)
        name = f"child-{next(self.counter)}"

        async def child() -> None:
            async with self.db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                for level in range(depth):
                    await self.db.unit_of_work(propagation=Propagation.NESTED).__aenter__()
                    self.db.session.add(Item(name=f"{name}-{level}"))
                    await self.db.async_session.flush()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.get_running_loop().create_task(child())
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        if refused and not isinstance(outcome, asyncio.CancelledError):
            assert isinstance(outcome, UnitOfWorkError)
        else:
            # Cancelled before or after its units began; an unended savepoint is invalidated
            # by the outermost unit ending first, which raises and rolls everything back.
            assert isinstance(outcome, asyncio.CancelledError | UnitOfWorkError), outcome
        assert committed_names(self.observer) == sorted(self.committed)

    # -- ending the innermost unit -------------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def exit_normally(self) -> None:
        self._exit(raise_error=False)

    @precondition(lambda self: bool(self.stack))
    @rule()
    def exit_with_an_exception(self) -> None:
        self._exit(raise_error=True)

    def _exit(self, raise_error: bool) -> None:
        self.runner.run(lambda: self._exit_step(raise_error))

    async def _exit_step(self, raise_error: bool, error: BaseException | None = None) -> None:
        """End the innermost unit: normally, or with ``error`` (by default the runner's
        exception or interruption) leaving its block."""
        top = self.stack.pop()
        frame = top.frame
        failed = raise_error or top.rollback_requested
        expect_unexpected = False
        if top.kind == "joined":
            assert frame is not None
            if failed:
                frame.doomed = True
        elif top.kind != "none":
            assert frame is not None
            succeeded = not failed and not frame.doomed
            expect_unexpected = not raise_error and frame.doomed and not top.rollback_requested
            if top.kind == "savepoint":
                assert frame.parent is not None
                if succeeded:
                    frame.parent.names.extend(frame.names)
                    frame.parent.commit_hooks.extend(frame.commit_hooks)
                    frame.parent.rollback_hooks.extend(frame.rollback_hooks)
            elif succeeded:
                self.committed.update(frame.names)
                self.expected_hooks.extend(frame.commit_hooks)
            else:
                self.expected_hooks.extend(frame.rollback_hooks)

        if raise_error:
            # Returns None (falsy): the "with" statement re-raises the exception unchanged.
            if error is None:
                error = self.runner.failure(next(self.counter))
            assert await self.runner.exit(top.real, error) is None
        elif expect_unexpected:
            with pytest.raises(UnexpectedRollback):
                await self.runner.exit(top.real, None)
        else:
            assert await self.runner.exit(top.real, None) is None
        if top.kind == "outermost":
            assert committed_names(self.observer) == sorted(self.committed)

    def _innermost_would_send_commit(self) -> bool:
        if not self.stack:
            return False
        top = self.stack[-1]
        frame = top.frame
        return (
            top.kind == "outermost"
            and frame is not None
            and not frame.read_only
            and bool(frame.names)
            and not frame.doomed
            and not top.rollback_requested
        )

    @precondition(lambda self: self._innermost_would_send_commit())
    @rule()
    def interrupt_at_commit(self) -> None:
        self.runner.run(self._interrupt_at_commit)

    async def _interrupt_at_commit(self) -> None:
        """COMMIT lands, then a KeyboardInterrupt or a cancellation strikes before its answer:
        the outcome is unknown, neither on_commit nor on_rollback hooks run."""
        top = self.stack.pop()
        assert top.frame is not None
        interruption = self.runner.interruption()
        engine = self.runner.engine(self.db)

        def commit_then_interrupt(connection: sa.Connection) -> None:
            connection.connection.dbapi_connection.commit()  # type: ignore[union-attr]
            raise interruption

        event.listen(engine, "commit", commit_then_interrupt)
        try:
            with pytest.raises(type(interruption)):
                await self.runner.exit(top.real, None)
        finally:
            event.remove(engine, "commit", commit_then_interrupt)
        assert top.real.outcome is Outcome.OUTCOME_UNKNOWN
        self.committed.update(top.frame.names)
        assert committed_names(self.observer) == sorted(self.committed)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def hooks_ran_as_predicted(self) -> None:
        assert self.actual_hooks == self.expected_hooks

    @invariant()
    def connections_checked_out_are_those_of_open_transactions(self) -> None:
        expected = sum(
            1
            for unit in self.stack
            if unit.kind == "outermost" and unit.root is not None and unit.root.connected
        )
        assert self.runner.checked_out(self.db) == expected

    @invariant()
    def the_innermost_unit_is_current(self) -> None:
        async def check() -> None:
            active = self._active()
            assert self.db.current is (active.real if active is not None else None)

        self.runner.run(check)

    def teardown(self) -> None:
        try:
            while self.stack:
                self._exit(raise_error=True)
            assert self.runner.checked_out(self.db) == 0
            assert self.db.stats.active == 0
        finally:
            self.runner.close(self.db)


def journal_mode(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()


def run_model(
    runner_class: type[Runner],
    db: Database,
    observer: sa.Engine,
    backend_name: str,
    *,
    max_examples: int,
    model: type[UnitTrees] = UnitTrees,
) -> None:
    """Run ``model`` (``UnitTrees`` or a machine built on it) with ``runner_class``'s units."""
    machine: Any = type(
        f"{model.__name__}{runner_class.__name__.removesuffix('Runner')}On{backend_name.title()}",
        (model,),
        {
            "db": db,
            "observer": observer,
            "backend": backend_name,
            "is_sqlite": backend_name == "sqlite",
            "is_wal": backend_name == "sqlite" and journal_mode(observer) == "wal",
            "runner_class": runner_class,
        },
    )
    run_state_machine_as_test(
        machine_factory(machine),
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )


def test_random_trees_of_units_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    max_examples = scaled(300, 3000) if backend_name == "sqlite" else scaled(100, 1000)
    run_model(SyncRunner, db, observer, backend_name, max_examples=max_examples)


def test_random_trees_of_async_units_with_cancellations_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    max_examples = scaled(100, 1000) if backend_name == "sqlite" else scaled(25, 250)
    run_model(AsyncRunner, db, observer, backend_name, max_examples=max_examples)
