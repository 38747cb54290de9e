"""The runners and the model's records of tests/test_stateful.py: a sync and an async way to
enter and leave units, the driver that picks between them, and what the model knows of a
transaction (``Frame``) and a unit (``ModelUnit``)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import sqlalchemy as sa

from flask_uow import Database, UnitOfWork

from .conftest import async_checked_out, checked_out

MAX_DEPTH = 5

ROW_NAMES = itertools.count()
"""Row names are never reused, not even across examples: on MariaDB, inserting a key that a
deleted, not yet purged row had takes a gap lock, which a REQUIRES_NEW unit of the same
thread would then wait for."""

T = TypeVar("T")
M = TypeVar("M")

Step = Callable[[], Coroutine[Any, Any, T]]


class Boom(Exception):
    """The application error the machine raises through units."""


def transient_error() -> sa.exc.OperationalError:
    """An error that ``is_transient`` classifies as worth a retry (SQLite's lock error)."""
    return sa.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))


# -- runners ---------------------------------------------------------------------------------


def run_without_suspending(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that awaits nothing that suspends, to its end, in this thread."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise AssertionError("a step of the sync runner suspended: only async units may await")


class SyncRunner:
    """Sync units: ``__enter__``/``__exit__``, a decorated ``def``, plain hooks."""

    is_async = False

    def run(self, step: Step[T]) -> T:
        return run_without_suspending(step())

    async def enter(self, unit: UnitOfWork) -> object:
        return unit.__enter__()

    async def exit(self, unit: UnitOfWork, error: BaseException | None) -> object:
        return cast(Any, unit).__exit__(type(error) if error else None, error, None)

    async def flush(self, db: Database) -> None:
        db.session.flush()

    async def execute(self, db: Database, statement: sa.Executable) -> None:
        db.session.execute(statement)

    def hook(self, record: Callable[[], None]) -> Callable[[], object]:
        return record

    def service(self, db: Database, retries: int, body: Step[None]) -> Step[None]:
        """``body`` as a ``@db.transactional(retries=...)`` function, called from a step."""

        @db.transactional(retries=retries)
        def service() -> None:
            run_without_suspending(body())

        async def call() -> None:
            service()

        return call

    def failure(self, number: int) -> BaseException:
        """What leaves a unit that ends with an error: an exception, or a KeyboardInterrupt."""
        return Boom() if number % 2 else KeyboardInterrupt()

    def interruption(self) -> BaseException:
        """What interrupts a unit while its COMMIT is on its way."""
        return KeyboardInterrupt()

    def engine(self, db: Database) -> sa.Engine:
        """The engine whose connections the units' COMMITs go through."""
        return db.engine

    def checked_out(self, db: Database) -> int:
        return checked_out(db)

    def close(self, db: Database) -> None:
        pass


class AsyncRunner:
    """Async units, every step in one task on a loop of its own (see ``Driver``)."""

    is_async = True

    def __init__(self) -> None:
        self.driver = Driver()

    def run(self, step: Step[T]) -> T:
        return self.driver.run(step)

    async def enter(self, unit: UnitOfWork) -> object:
        return await unit.__aenter__()

    async def exit(self, unit: UnitOfWork, error: BaseException | None) -> object:
        return await cast(Any, unit).__aexit__(type(error) if error else None, error, None)

    async def flush(self, db: Database) -> None:
        await db.async_session.flush()

    async def execute(self, db: Database, statement: sa.Executable) -> None:
        await db.async_session.execute(statement)

    def hook(self, record: Callable[[], None]) -> Callable[[], object]:
        async def hook() -> None:
            await asyncio.sleep(0)
            record()

        return hook

    def service(self, db: Database, retries: int, body: Step[None]) -> Step[None]:
        @db.transactional(retries=retries)
        async def service() -> None:
            await body()

        return service

    def failure(self, number: int) -> BaseException:
        # An exception or a cancellation through the block: both roll back.
        return Boom() if number % 2 else asyncio.CancelledError()

    def interruption(self) -> BaseException:
        # The cancellation of the task running the end (asyncio.run() shutting down, say).
        return asyncio.CancelledError()

    def engine(self, db: Database) -> sa.Engine:
        return db.async_engine.sync_engine

    def checked_out(self, db: Database) -> int:
        return async_checked_out(db)

    def close(self, db: Database) -> None:
        try:
            self.driver.run(db.async_engine.dispose)
        finally:
            self.driver.close()


Runner = SyncRunner | AsyncRunner


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
            except BaseException as error:  # handed to the step's caller
                # pytest's failures and Hypothesis' own signals are BaseExceptions too: they
                # fail that step; they never end this task, which would leave every later
                # step waiting for it.
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


# -- the model -------------------------------------------------------------------------------


@dataclass(eq=False)
class Frame:
    """What the model knows of one transaction or savepoint."""

    read_only: bool
    parent: Frame | None = None
    names: list[str] = field(default_factory=list)
    commit_hooks: list[str] = field(default_factory=list)
    rollback_hooks: list[str] = field(default_factory=list)
    doomed: bool = False
    connected: bool = False
    """A root: its connection is checked out. A savepoint: its SAVEPOINT was sent (SQLAlchemy
    sends it with the first statement run inside it, not when the unit is entered)."""
    lost: bool = False
    """The connection went, and the transaction with it: its SAVEPOINT is gone for good."""

    def ran_a_statement(self) -> None:
        """A statement ran in this frame: it and every frame around it are on the connection."""
        frame: Frame | None = self
        while frame is not None:
            frame.connected = frame.parent is None or not frame.lost
            frame = frame.parent


@dataclass(eq=False)
class ModelUnit:
    real: UnitOfWork
    kind: str  # "outermost", "savepoint", "joined" or "none" (runs with no transaction)
    frame: Frame | None  # the frame it owns, or the one it joined; None for "none"
    root: Frame | None
    rollback_requested: bool = False


def machine_factory(machine: type[M]) -> type[M]:
    """``machine`` behind a plain function, for ``run_state_machine_as_test``.

    Hypothesis digests its factory's source. For a class, Python 3.11's ``inspect`` parses
    the whole module with ``ast.parse``, which can fail with "AST constructor recursion depth
    mismatch" (a CPython 3.11 bug) while Hypothesis has raised the recursion limit; a
    function's source is found without parsing. (Hypothesis only calls it; its annotation
    asks for the class itself, hence the cast.)
    """

    def make() -> M:
        return machine()

    return cast("type[M]", make)
