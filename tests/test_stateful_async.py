"""The stateful model of ``test_stateful.py`` driving async units, plus cancelled subtrees.

Every step runs in one long-lived task (async units belong to the task that entered them),
through an event loop this machine owns. Besides the steps of the sync model, a step starts
a child task that opens its own units (REQUIRES_NEW), writes, and is cancelled at a random
point: none of its work may be committed, and its connection must go back to the pool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

from flask_uow import (
    Database,
    NoActiveUnitOfWork,
    Propagation,
    ReadOnlyViolation,
    UnexpectedRollback,
    UnitOfWorkError,
)

from .conftest import async_checked_out, committed_names
from .models import Item
from .test_stateful import MAX_DEPTH, Boom, Frame, ModelUnit, UnitTrees, journal_mode

T = TypeVar("T")


class Driver:
    """One task on a private event loop that runs each step's coroutine in turn."""

    def __init__(self) -> None:
        self.threads_before = set(threading.enumerate())
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            step, done = await self.queue.get()
            try:
                done.set_result(await step())
            except Exception as error:  # handed to the step's caller
                done.set_exception(error)

    def run(self, step: Callable[[], Awaitable[T]]) -> T:
        async def submit() -> T:
            done: asyncio.Future[T] = self.loop.create_future()
            self.queue.put_nowait((step, done))
            return await done

        return self.loop.run_until_complete(submit())

    def close(self) -> None:
        self.task.cancel()
        self.loop.run_until_complete(asyncio.gather(self.task, return_exceptions=True))
        # An aiosqlite connection that SQLAlchemy terminated after a cancellation finishes
        # its last statement in its own thread, then reports to this loop: poll until those
        # threads end, before closing the loop under them.
        deadline = time.monotonic() + 30
        while self._driver_threads() and time.monotonic() < deadline:
            self.loop.run_until_complete(asyncio.sleep(0.005))
        assert not self._driver_threads()
        self.loop.close()

    def _driver_threads(self) -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread not in self.threads_before and "connection_worker" in thread.name
        ]


class AsyncUnitTrees(UnitTrees):
    def __init__(self) -> None:
        super().__init__()
        self.driver = Driver()

    # -- entering ------------------------------------------------------------------------

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(propagation=st.sampled_from(Propagation), read_only=st.booleans())
    def enter(self, propagation: Propagation, read_only: bool) -> None:
        self.driver.run(lambda: self._enter(propagation, read_only))

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
                await unit.__aenter__()
            return
        assert cast(object, await unit.__aenter__()) is unit
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

    # -- work inside the innermost unit --------------------------------------------------

    @precondition(lambda self: bool(self.stack))
    @rule()
    def write(self) -> None:
        self.driver.run(self._write)

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
                await self.db.async_session.flush()
            self.db.session.expunge(item)
            return
        await self.db.async_session.flush()
        top.frame.names.append(name)
        top.root.connected = True

    @precondition(lambda self: bool(self.stack))
    @rule()
    def read(self) -> None:
        self.driver.run(self._read)

    async def _read(self) -> None:
        top = self.stack[-1]
        statement = sa.select(sa.func.count()).select_from(Item)
        if top.kind == "none":
            with pytest.raises(NoActiveUnitOfWork):
                await self.db.async_session.execute(statement)
            return
        assert top.root is not None
        await self.db.async_session.execute(statement)
        top.root.connected = True

    @precondition(lambda self: bool(self.stack))
    @rule(on_commit=st.booleans())
    def add_hook(self, on_commit: bool) -> None:
        self.driver.run(lambda: self._add_hook(on_commit))

    async def _add_hook(self, on_commit: bool) -> None:
        top = self.stack[-1]
        label = f"hook-{next(self.counter)}"

        async def hook() -> None:
            await asyncio.sleep(0)
            self.actual_hooks.append(label)

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
        self.driver.run(self._set_rollback)

    async def _set_rollback(self) -> None:
        UnitTrees.set_rollback(self)

    @precondition(lambda self: len(self.stack) < MAX_DEPTH)
    @rule(failures=st.integers(min_value=0, max_value=3))
    def call_with_retries(self, failures: int) -> None:
        self.driver.run(lambda: self._call_with_retries(failures))

    async def _call_with_retries(self, failures: int) -> None:
        active = self._active()
        name = f"row-{next(self.counter)}"
        attempts: list[int] = []

        @self.db.transactional(retries=2)
        async def service() -> None:
            attempts.append(1)
            self.db.session.add(Item(name=f"{name}-{len(attempts)}"))
            await self.db.async_session.flush()
            if len(attempts) <= failures:
                raise sa.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))

        if active is not None:
            assert active.root is not None and active.frame is not None
            if active.root.read_only:
                with pytest.raises(ReadOnlyViolation):
                    await service()
                return
            if failures:
                with pytest.raises(sa.exc.OperationalError):
                    await service()
                active.frame.doomed = True
            else:
                await service()
                active.frame.names.append(f"{name}-1")
            active.root.connected = True
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

    @rule(depth=st.integers(min_value=1, max_value=3), ticks=st.integers(0, 12))
    def cancel_a_child_task(self, depth: int, ticks: int) -> None:
        """A task started inside the current units opens its own, writes, and is cancelled."""
        self.driver.run(lambda: self._cancel_a_child_task(depth, ticks))

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

    def _exit(self, raise_error: bool) -> None:
        self.driver.run(lambda: self._exit_async(raise_error))

    async def _exit_async(self, raise_error: bool) -> None:
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
            # An exception or a cancellation through the block: both roll back.
            error: BaseException = Boom() if next(self.counter) % 2 else asyncio.CancelledError()
            await top.real.__aexit__(type(error), error, None)
        elif expect_unexpected:
            with pytest.raises(UnexpectedRollback):
                await top.real.__aexit__(None, None, None)
        else:
            await top.real.__aexit__(None, None, None)
        if top.kind == "outermost":
            assert committed_names(self.observer) == sorted(self.committed)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def connections_checked_out_are_those_of_open_transactions(self) -> None:
        expected = sum(
            1
            for unit in self.stack
            if unit.kind == "outermost" and unit.root is not None and unit.root.connected
        )
        assert async_checked_out(self.db) == expected

    @invariant()
    def the_innermost_unit_is_current(self) -> None:
        async def check() -> None:
            active = self._active()
            assert self.db.current is (active.real if active is not None else None)

        self.driver.run(check)

    def teardown(self) -> None:
        try:
            while self.stack:
                self._exit(raise_error=True)
            assert async_checked_out(self.db) == 0
            assert self.db.stats.active == 0
            self.driver.run(self.db.async_engine.dispose)
        finally:
            self.driver.close()


def test_random_trees_of_async_units_with_cancellations_match_the_model(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    machine: Any = type(
        "AsyncUnitTreesOn" + backend_name.title(),
        (AsyncUnitTrees,),
        {
            "db": db,
            "observer": observer,
            "is_sqlite": backend_name == "sqlite",
            "is_wal": backend_name == "sqlite" and journal_mode(observer) == "wal",
        },
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=100 if backend_name == "sqlite" else 25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
