"""Counting what a call costs, deterministically: Python function calls (``sys.setprofile``)
and round trips to the database (under the driver). The cost gates of ``tests/test_costs.py``
use them, and the benchmarks print the same figures beside their timings."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.util import await_only, greenlet_spawn


class CallCounter:
    """A ``sys.setprofile`` callback that counts Python function calls (``calls``)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, frame: FrameType, what: str, arg: Any) -> None:
        if what == "call":
            self.calls += 1


def count_calls(
    operation: Callable[[], object],
    *,
    warmup: int = 30,
    samples: int = 5,
    settle: Callable[[], object] = lambda: None,
) -> int:
    """Python function calls one ``operation()`` makes, once caches are warm.

    The smallest of a few samples: the floor is what the code does every time; a pool
    growing or a cache filling adds calls only now and then. ``settle()`` runs, uncounted,
    before every call: it waits for what the previous one left to other threads (the
    outbox's in-process deliveries), so that no call overlaps their work.
    """
    for _ in range(warmup):
        settle()
        operation()
    counts = []
    gc.collect()
    gc.disable()  # a collection would run finalizers in the middle of the count
    try:
        for _ in range(samples):
            settle()
            counter = CallCounter()
            sys.setprofile(counter)
            try:
                operation()
            finally:
                sys.setprofile(None)
            counts.append(counter.calls)
    finally:
        gc.enable()
    return min(counts)


async def count_calls_async(
    operation: Callable[[], Awaitable[object]], *, warmup: int = 30, samples: int = 9
) -> int:
    """Python function calls one ``await operation()`` makes, once caches are warm.

    As :func:`count_calls`, with what the event loop runs in this thread meanwhile: resuming
    a suspended coroutine counts as a call of each frame it resumes, so a statement whose
    reply is late (the task suspends once more) costs a few calls more. The smallest of
    more samples than the sync count takes is that floor: every reply in time.
    """
    for _ in range(warmup):
        await operation()
    counts = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(samples):
            counter = CallCounter()
            sys.setprofile(counter)
            try:
                await operation()
            finally:
                sys.setprofile(None)
            counts.append(counter.calls)
    finally:
        gc.enable()
    return min(counts)


class Wire:
    """Round trips to the database, counted under the driver while :meth:`measure` runs.

    Every connection a pool opens is noted; the counting is installed on them only for the
    measured call and removed after it, so it costs nothing in between.
    """

    def __init__(self) -> None:
        self.trips = 0
        self._active = False
        self._records: dict[int, Any] = {}  # pool entries, whose connection may change
        self._undo: list[Callable[[], None]] = []

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self._records[id(record)] = record
        if self._active:
            self._install(dbapi_connection)

    def _count(self, *args: Any) -> None:
        self.trips += 1

    def _install(self, connection: Any) -> None:
        # SQLAlchemy's async dialects pool an adapter around the driver's own connection.
        connection = getattr(connection, "driver_connection", connection)
        module = type(connection).__module__
        if module.startswith("aiosqlite"):
            # Its sqlite3 connection lives in the driver's thread: install through the
            # driver, from the greenlet an async engine runs its sync code in.
            if greenlet.getcurrent().parent is None:
                return  # a sync measure(): an async connection cannot take part in it
            try:
                await_only(connection.set_trace_callback(self._count))
            except Exception:  # closed since the pool dropped it
                return
            self._undo.append(lambda: _quietly(_await, connection.set_trace_callback(None)))
        elif module.startswith("sqlite3"):
            try:
                connection.set_trace_callback(self._count)  # every statement SQLite runs
            except Exception:  # closed since the pool dropped it
                return
            self._undo.append(lambda: _quietly(connection.set_trace_callback, None))
        elif module.startswith(("pymysql", "aiomysql")):
            # One command, one round trip (aiomysql's returns a coroutine, passed on as is).
            execute = connection._execute_command

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.trips += 1
                return execute(*args, **kwargs)

            connection._execute_command = counted
            self._undo.append(lambda: connection.__dict__.pop("_execute_command", None))
        elif module.startswith("psycopg"):
            # libpq writes every protocol message; each round trip ends with ReadyForQuery.
            if connection.closed:
                return
            fd, path = tempfile.mkstemp(prefix="flask_uow_trace_")
            os.unlink(path)
            connection.pgconn.trace(fd)
            self._undo.append(lambda: self._read_trace(connection, fd))

    def _read_trace(self, connection: Any, fd: int) -> None:
        connection.pgconn.untrace()  # flushes the trace
        with os.fdopen(os.dup(fd), "rb") as trace:
            trace.seek(0)
            self.trips += sum(1 for line in trace if b"\tReadyForQuery" in line)
        os.close(fd)

    def _install_pooled(self) -> None:
        self._active = True
        for record in list(self._records.values()):
            if record.dbapi_connection is not None:
                self._install(record.dbapi_connection)

    def _uninstall(self) -> None:
        self._active = False
        for undo in self._undo:
            undo()
        self._undo.clear()

    def measure(
        self,
        operation: Callable[[], object],
        *,
        this_thread_only: bool = False,
        settle: Callable[[], object] = lambda: None,
    ) -> int:
        """Round trips one ``operation()`` makes, after ``settle()`` (uncounted, as in
        :func:`count_calls`).

        With ``this_thread_only``, only those on connections this thread checks out while
        ``operation()`` runs (counted from checkout to checkin): what other threads send
        meanwhile, such as the outbox's in-process deliveries, is left out.
        """
        settle()
        self.trips = 0
        if this_thread_only:
            return self._measure_this_thread(operation)
        self._install_pooled()
        try:
            operation()
        finally:
            self._uninstall()
        return self.trips

    def _measure_this_thread(self, operation: Callable[[], object]) -> int:
        me = threading.get_ident()
        undo_at_checkin: dict[int, list[Callable[[], None]]] = {}

        def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            if threading.get_ident() == me and id(record) not in undo_at_checkin:
                self._install(dbapi_connection)
                undo_at_checkin[id(record)], self._undo = self._undo, []

        def checkin(dbapi_connection: Any, record: Any) -> None:
            for undo in undo_at_checkin.pop(id(record), []):
                undo()

        event.listen(sa.pool.Pool, "checkout", checkout)
        event.listen(sa.pool.Pool, "checkin", checkin)
        try:
            operation()
        finally:
            event.remove(sa.pool.Pool, "checkout", checkout)
            event.remove(sa.pool.Pool, "checkin", checkin)
            for undos in undo_at_checkin.values():
                for undo in undos:
                    undo()
        return self.trips

    async def measure_async(self, operation: Callable[[], Awaitable[object]]) -> int:
        """Round trips one ``await operation()`` makes, on sync and async drivers alike."""
        self.trips = 0
        await greenlet_spawn(self._install_pooled)
        try:
            await operation()
        finally:
            await greenlet_spawn(self._uninstall)
        return self.trips


def _await(awaitable: Awaitable[object]) -> None:
    await_only(awaitable)


def _quietly(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        pass


@contextmanager
def wire() -> Iterator[Wire]:
    """Count round trips on every connection pools open while this is active."""
    counter = Wire()
    event.listen(sa.pool.Pool, "connect", counter.on_connect)
    try:
        yield counter
    finally:
        event.remove(sa.pool.Pool, "connect", counter.on_connect)
