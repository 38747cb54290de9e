"""Counted costs: what flask-uow adds to bare SQLAlchemy doing the same work.

Timings are noise on a shared machine, so CI gates on what is deterministic instead: the
Python function calls a unit (or a request) makes, counted with ``sys.setprofile``, and the
round trips it makes to the database, counted under the driver (libpq's trace for psycopg,
SQLite's trace callback, PyMySQL's command calls), so nothing flask-uow does is changed by
the counting. Each scenario runs flask-uow and its bare-SQLAlchemy twin, which sends the same
statements in the same transaction structure:

- on SQLite the twin uses SQLAlchemy's documented pysqlite recipe (driver transactions off,
  ``BEGIN`` from a ``begin`` listener; ``BEGIN IMMEDIATE`` where flask-uow writes);
- on PostgreSQL and MariaDB it runs on a stock engine; its read-only unit uses
  ``postgresql_readonly=True`` or ``SET TRANSACTION READ ONLY``.

Budgets are extra calls per unit or request; round trips get none. When a test fails, its
message gives both figures: after a deliberate change, set the budget from them.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only, greenlet_spawn

from flask_uow import Database

from .models import Base, Item

# Extra Python calls flask-uow may make per unit or request over its twin: the figure of the
# revision that introduced this gate (the largest over SQLite, PostgreSQL and MariaDB), plus 5
# calls of slack for SQLAlchemy releases moving a call or two (these tests also run on
# SQLAlchemy 2.0). One more listener per statement, a frame walk or a wrapper per unit costs
# more than that. Figures then (calls, flask-uow minus twin, SQLite / PostgreSQL / MariaDB):
# - empty unit -64 / -64 / -64: flask-uow builds no Session for an empty unit, the twin
#   builds one and begins it;
# - primary-key unit -25 / +15 / +15; insert unit -27 / +13 / +13 (on SQLite flask-uow sends
#   BEGIN straight to the driver, the twin's documented recipe goes through SQLAlchemy);
# - read-only unit -4 / -3 / -7;
# - requests (the ledger's services, unit and on_commit hook against the twin's views):
#   GET /customers/<id> +26 / +5 / +1, POST /transfers +20 / +60 / +60,
#   GET /accounts/<id>/transfers +37 / +19 / +15.
# Recalibrated after the core rewrite (0.2): every unit budget still holds. POST /transfers
# went to +46 / +93 / +86: about +26 on every backend is the ledger's body reading, which
# stays correct for chunked and streamed bodies and which the twin does not repeat, and +9 on
# PostgreSQL is the check that a unit's transaction was not aborted by a caught error before
# it reports a COMMIT (see docs/guide.md). Measured again across many runs, PostgreSQL's
# figure moves between +93 and +100 from run to run (the same code; the cause is not pinned
# down yet): the budget takes the top of that range.
EMPTY_UNIT_CALL_BUDGET = -64 + 5
PRIMARY_KEY_UNIT_CALL_BUDGET = 15 + 5
INSERT_UNIT_CALL_BUDGET = 13 + 5
READ_ONLY_UNIT_CALL_BUDGET = -3 + 5
GET_CUSTOMER_CALL_BUDGET = 26 + 5
POST_TRANSFER_CALL_BUDGET = 100 + 5
GET_TRANSFERS_CALL_BUDGET = 37 + 5
# The async primary-key unit against a bare AsyncSession doing the same work (on SQLite with
# SQLAlchemy's aiosqlite recipe, sending the same BEGIN IMMEDIATE): +12 / +20 / +7 when this
# gate came in. Async counts include the resumptions of suspended coroutines, one per frame
# of the awaiting chain per wait on the driver; the smallest of 9 samples was the same in
# every sample measured, on a loaded machine too.
ASYNC_PRIMARY_KEY_UNIT_CALL_BUDGET = 20 + 5
# The async read-only unit: -54 / +9 / -12; on PostgreSQL it begins READ ONLY in the BEGIN
# psycopg sends (it sent a SET TRANSACTION too, +166 calls and a round trip, before).
ASYNC_READ_ONLY_UNIT_CALL_BUDGET = 9 + 5

# Counted on direct connections: behind PgBouncer the twins would need the pooler's settings.
pytestmark = pytest.mark.parametrize(
    "backend_url", ["sqlite", "postgresql", "mariadb"], indirect=True
)

EXTRA_ROUND_TRIPS = 0
"""Round trips flask-uow may add to its twin, per unit or request: none."""


# -- counting ------------------------------------------------------------------------------


def count_calls(operation: Callable[[], object], *, warmup: int = 30, samples: int = 5) -> int:
    """Python function calls one ``operation()`` makes, once caches are warm.

    The smallest of a few samples: the floor is what the code does every time; a pool
    growing or a cache filling adds calls only now and then.
    """
    for _ in range(warmup):
        operation()
    counts = []
    gc.collect()
    gc.disable()  # a collection would run finalizers in the middle of the count
    try:
        for _ in range(samples):
            calls = 0

            def profile(frame: FrameType, what: str, arg: Any) -> None:
                nonlocal calls
                if what == "call":
                    calls += 1

            sys.setprofile(profile)
            try:
                operation()
            finally:
                sys.setprofile(None)
            counts.append(calls)
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
            calls = 0

            def profile(frame: FrameType, what: str, arg: Any) -> None:
                nonlocal calls
                if what == "call":
                    calls += 1

            sys.setprofile(profile)
            try:
                await operation()
            finally:
                sys.setprofile(None)
            counts.append(calls)
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

    def measure(self, operation: Callable[[], object]) -> int:
        """Round trips one ``operation()`` makes."""
        self.trips = 0
        self._install_pooled()
        try:
            operation()
        finally:
            self._uninstall()
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


@dataclass(frozen=True)
class Figures:
    calls: int
    trips: int


def figures(counter: Wire, operation: Callable[[], object]) -> Figures:
    calls = count_calls(operation)
    return Figures(calls, counter.measure(operation))


def check(scenario: str, ours: Figures, twin: Figures, call_budget: int) -> None:
    report = (
        f"{scenario}: flask-uow {ours.calls} calls and {ours.trips} round trips, bare "
        f"SQLAlchemy {twin.calls} calls and {twin.trips} round trips: {ours.calls - twin.calls:+d}"
        f" calls against a budget of {call_budget:+d} (see the budgets at the top of "
        "tests/test_costs.py)"
    )
    print(report)
    if scenario != "empty unit":
        assert twin.trips > 0, "the round-trip counter saw no statement at all: " + report
    assert ours.trips - twin.trips <= EXTRA_ROUND_TRIPS, report
    assert ours.calls - twin.calls <= call_budget, report


# -- the twins -----------------------------------------------------------------------------


def _sqlite_twin_engine(url: str) -> tuple[sa.Engine, sa.Engine]:
    engine = sa.create_engine(url)

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON").close()

    @event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("twin_write_lock")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine.execution_options(twin_write_lock=True), engine


def twin_engines(url: str) -> tuple[sa.Engine, sa.Engine]:
    """The bare twin's engines: (read-write, read-only)."""
    if url.startswith("sqlite"):
        return _sqlite_twin_engine(url)
    engine = sa.create_engine(url)
    if engine.dialect.name == "postgresql":
        return engine, engine.execution_options(postgresql_readonly=True)
    read_only = engine.execution_options(twin_read_only=True)
    event.listen(read_only, "begin", lambda c: c.exec_driver_sql("SET TRANSACTION READ ONLY"))
    return engine, read_only


@pytest.fixture
def units(backend_url: str) -> Iterator[tuple[Database, sa.Engine, sa.Engine, Wire]]:
    with wire() as counter:
        db = Database(backend_url, metadata=Base.metadata)
        db.drop_all()
        db.create_all()
        with db.unit_of_work():
            db.session.add(Item(name="seeded"))
        read_write, read_only = twin_engines(backend_url)
        try:
            yield db, read_write, read_only, counter
        finally:
            read_write.dispose()
            db.drop_all()
            db.dispose()


# -- units ---------------------------------------------------------------------------------

_names = itertools.count()


def test_an_empty_unit_costs_no_more_than_its_budget(units: Any) -> None:
    db, read_write, _, counter = units

    def ours() -> None:
        with db.unit_of_work():
            pass

    def twin() -> None:
        with Session(read_write, expire_on_commit=False) as session, session.begin():
            pass

    check("empty unit", figures(counter, ours), figures(counter, twin), EMPTY_UNIT_CALL_BUDGET)


def test_a_primary_key_unit_costs_no_more_than_its_budget(units: Any) -> None:
    db, read_write, _, counter = units

    def ours() -> None:
        with db.unit_of_work():
            db.session.get(Item, 1)

    def twin() -> None:
        with Session(read_write, expire_on_commit=False) as session, session.begin():
            session.get(Item, 1)

    check(
        "primary-key unit",
        figures(counter, ours),
        figures(counter, twin),
        PRIMARY_KEY_UNIT_CALL_BUDGET,
    )


def test_an_insert_unit_costs_no_more_than_its_budget(units: Any) -> None:
    db, read_write, _, counter = units

    def ours() -> None:
        with db.unit_of_work():
            db.session.add(Item(name=f"ours {next(_names)}"))

    def twin() -> None:
        with Session(read_write, expire_on_commit=False) as session, session.begin():
            session.add(Item(name=f"twin {next(_names)}"))

    check("insert unit", figures(counter, ours), figures(counter, twin), INSERT_UNIT_CALL_BUDGET)


def test_a_read_only_unit_costs_no_more_than_its_budget(units: Any) -> None:
    db, _, read_only, counter = units

    def ours() -> None:
        with db.unit_of_work(read_only=True):
            db.session.get(Item, 1)

    def twin() -> None:
        with Session(read_only, expire_on_commit=False) as session, session.begin():
            session.get(Item, 1)

    check(
        "read-only unit", figures(counter, ours), figures(counter, twin), READ_ONLY_UNIT_CALL_BUDGET
    )


# -- async units ---------------------------------------------------------------------------


def _async_twin_engine(url: sa.URL) -> AsyncEngine:
    """The bare async twin's read-write engine: stock, or on SQLite SQLAlchemy's documented
    aiosqlite recipe sending ``BEGIN IMMEDIATE`` as flask-uow does."""
    engine = create_async_engine(url)
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine.sync_engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("twin_write_lock")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine.execution_options(twin_write_lock=True)


@pytest.fixture
async def async_units(
    units: tuple[Database, sa.Engine, sa.Engine, Wire],
) -> AsyncIterator[tuple[Database, AsyncEngine, Wire]]:
    db, _, _, counter = units
    twin = _async_twin_engine(db.async_engine.url)  # the async driver flask-uow picked
    try:
        yield db, twin, counter
    finally:
        await twin.dispose()
        await db.dispose_async()


async def async_figures(counter: Wire, operation: Callable[[], Awaitable[object]]) -> Figures:
    calls = await count_calls_async(operation)
    return Figures(calls, await counter.measure_async(operation))


@pytest.mark.anyio
async def test_an_async_primary_key_unit_costs_no_more_than_its_budget(
    async_units: tuple[Database, AsyncEngine, Wire],
) -> None:
    db, twin_engine, counter = async_units

    async def ours() -> None:
        async with db.unit_of_work():
            await db.async_session.get(Item, 1)

    async def twin() -> None:
        async with AsyncSession(twin_engine, expire_on_commit=False) as session:
            async with session.begin():
                await session.get(Item, 1)

    check(
        "async primary-key unit",
        await async_figures(counter, ours),
        await async_figures(counter, twin),
        ASYNC_PRIMARY_KEY_UNIT_CALL_BUDGET,
    )


def _async_read_only_twin(read_write: AsyncEngine) -> AsyncEngine:
    """The bare async twin's read-only engine, as ``twin_engines()`` makes the sync one."""
    name = read_write.dialect.name
    if name == "sqlite":
        return read_write.execution_options(twin_write_lock=False)  # a deferred BEGIN
    if name == "postgresql":
        return read_write.execution_options(postgresql_readonly=True)
    read_only = read_write.execution_options(twin_read_only=True)
    event.listen(
        read_only.sync_engine, "begin", lambda c: c.exec_driver_sql("SET TRANSACTION READ ONLY")
    )
    return read_only


@pytest.mark.anyio
async def test_an_async_read_only_unit_costs_no_more_than_its_budget(
    async_units: tuple[Database, AsyncEngine, Wire],
) -> None:
    db, twin_engine, counter = async_units
    read_only = _async_read_only_twin(twin_engine)

    async def ours() -> None:
        async with db.unit_of_work(read_only=True):
            await db.async_session.get(Item, 1)

    async def twin() -> None:
        async with AsyncSession(read_only, expire_on_commit=False) as session:
            async with session.begin():
                await session.get(Item, 1)

    check(
        "async read-only unit",
        await async_figures(counter, ours),
        await async_figures(counter, twin),
        ASYNC_READ_ONLY_UNIT_CALL_BUDGET,
    )


# -- the ledger's hot endpoints ------------------------------------------------------------


@pytest.fixture
def ledger_apps(
    backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, Flask, Wire]]:
    # The ledger example is installed by `make test`, not in the SQLAlchemy 2.0 run.
    pytest.importorskip("ledger", reason="the ledger example is not installed")
    from benchmarks.peers import flask_uow_app, sqlalchemy_app
    from ledger.models import Account, Customer, Transfer
    from ledger.models import Base as LedgerBase

    monkeypatch.setenv("BENCH_DATABASE_URL", backend_url)
    monkeypatch.setenv("BENCH_POOL_SIZE", "2")
    setup = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    LedgerBase.metadata.drop_all(setup)
    LedgerBase.metadata.create_all(setup)
    with setup.begin() as connection:
        connection.execute(
            sa.insert(Customer),
            [{"name": f"Customer {i}", "email": f"c{i}@example.com"} for i in range(1, 11)],
        )
        connection.execute(
            sa.insert(Account), [{"customer_id": i, "balance": 10**6} for i in range(1, 11)]
        )
        connection.execute(
            sa.insert(Transfer),
            [
                {"from_account_id": 1 + i % 10, "to_account_id": 1 + (i + 1) % 10, "amount": 1}
                for i in range(30)
            ],
        )
    with wire() as counter:
        ours, twin = flask_uow_app.create_app(), sqlalchemy_app.create_app()
        try:
            yield ours, twin, counter
        finally:
            sqlalchemy_app.dispose(twin)
            with ours.app_context():
                flask_uow_app.dispose(ours)
            LedgerBase.metadata.drop_all(setup)
            setup.dispose()


def _request(app: Flask, method: str, path: str, body: Any = None) -> Callable[[], None]:
    client = app.test_client()

    def send() -> None:
        reply = client.open(path, method=method, json=body)
        assert reply.status_code < 400, reply.get_data(as_text=True)

    return send


@pytest.mark.parametrize(
    ("method", "path", "body", "budget"),
    [
        ("GET", "/customers/3", None, GET_CUSTOMER_CALL_BUDGET),
        (
            "POST",
            "/transfers",
            {"from_account": 2, "to_account": 5, "amount": 1},
            POST_TRANSFER_CALL_BUDGET,
        ),
        ("GET", "/accounts/4/transfers", None, GET_TRANSFERS_CALL_BUDGET),
    ],
    ids=["get-customer", "post-transfer", "get-transfers"],
)
def test_a_ledger_request_costs_no_more_than_its_budget(
    ledger_apps: tuple[Flask, Flask, Wire], method: str, path: str, body: Any, budget: int
) -> None:
    ours, twin, counter = ledger_apps
    check(
        f"{method} {path}",
        figures(counter, _request(ours, method, path, body)),
        figures(counter, _request(twin, method, path, body)),
        budget,
    )
