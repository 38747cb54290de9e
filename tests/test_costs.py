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

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from flask_uow import Database, Propagation

from .counting import Wire, count_calls, count_calls_async, wire
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
# Lowered after issue #22 (outermost units count themselves without a lock or a call, the
# PostgreSQL abort check reads libpq's status without building objects, a savepoint with
# nothing pending skips its flush): empty unit -66 / -66 / -66, primary-key unit
# -30 / +10 / +10, insert unit -27 / +13 / +13, read-only unit -5 / -86 / -8.
# Then COMMIT written out in the unit's ending rather than called: primary-key unit
# -31 / +9 / +9 (and +11 on PostgreSQL in a Flask app context, gated at 3% below).
EMPTY_UNIT_CALL_BUDGET = -66 + 5
PRIMARY_KEY_UNIT_CALL_BUDGET = 9 + 5
INSERT_UNIT_CALL_BUDGET = 13 + 5
READ_ONLY_UNIT_CALL_BUDGET = -5 + 5
# The twin's views build their statements and check a transfer in functions they share with
# the Quart apps (tests/peer_apps/views.py): +1 call per read and up to +5 per transfer for
# the twin, taken off the request budgets so that the gate stays as tight as before.
GET_CUSTOMER_CALL_BUDGET = 26 + 5 - 1
# POST /transfers enqueues transfer.completed in its unit since the outbox: +217 / +309 /
# +310 over the twin, and one round trip more (the outbox INSERT); the in-process delivery
# runs on the outbox's thread, whose calls and round trips are not the request's (see
# request_figures).
POST_TRANSFER_CALL_BUDGET = 310 + 5 - 5
GET_TRANSFERS_CALL_BUDGET = 37 + 5 - 1
# The async primary-key unit against a bare AsyncSession doing the same work (on SQLite with
# SQLAlchemy's aiosqlite recipe, sending the same BEGIN IMMEDIATE): +12 / +20 / +7 when this
# gate came in. Async counts include the resumptions of suspended coroutines, one per frame
# of the awaiting chain per wait on the driver; the smallest of 9 samples was the same in
# every sample measured, on a loaded machine too.
# After issue #22: +11 / +17 / +6.
ASYNC_PRIMARY_KEY_UNIT_CALL_BUDGET = 17 + 5
# The async read-only unit: -54 / +9 / -12; on PostgreSQL it begins READ ONLY in the BEGIN
# psycopg sends (it sent a SET TRANSACTION too, +166 calls and a round trip, before).
# After issue #22: -55 / -68 / -13.
ASYNC_READ_ONLY_UNIT_CALL_BUDGET = -13 + 5
# How a unit's cost grows (BENCHMARKS.md, "How cost grows"): the extra calls flask-uow makes
# over its twin per added statement, per added NESTED level (a SAVEPOINT each side) and per
# added on_commit hook (the twin keeps the same callables in a list and calls them after
# COMMIT), when this gate came in (SQLite / PostgreSQL / MariaDB): per statement +3 / +3 / +3
# (reading ``db.session`` finds the current unit: 3 calls; a unit that keeps the session in
# a local variable adds 0), per level +8 / +13 / +8 (PostgreSQL checks whether a caught error
# aborted the transaction before it RELEASEs a savepoint), per hook +12 / +12 / +12. The
# budget is per step, with the file's 5 calls of slack over the whole sweep; round trips must
# stay equal at every point. Per NESTED level it rose to +20 on PostgreSQL the same day: a
# savepoint flushes what is pending before its SAVEPOINT (so that a failure there is told as
# the enclosing unit's, not the savepoint's: +5) and enters and ends through the transition
# function and its transaction record (+2). Lowered to +10 / +10 / +10 after issue #22: the
# savepoint flushes only when something is pending, and PostgreSQL's abort check before
# RELEASE reads libpq's status without building objects.
EXTRA_CALLS_PER_STATEMENT_BUDGET = 3
EXTRA_CALLS_PER_NESTED_LEVEL_BUDGET = 10
EXTRA_CALLS_PER_HOOK_BUDGET = 12

# Counted on direct connections: behind PgBouncer the twins would need the pooler's settings.
pytestmark = pytest.mark.parametrize(
    "backend_url", ["sqlite", "postgresql", "mariadb"], indirect=True
)

EXTRA_ROUND_TRIPS = 0
"""Round trips flask-uow may add to its twin, per unit or request: none (a request that
enqueues an outbox message is given its one INSERT, with ``extra_trips``)."""


@dataclass(frozen=True)
class Figures:
    calls: int
    trips: int


def figures(counter: Wire, operation: Callable[[], object]) -> Figures:
    calls = count_calls(operation)
    return Figures(calls, counter.measure(operation))


def request_figures(counter: Wire, operation: Callable[[], object]) -> Figures:
    """As ``figures``, each request starting once the ledger's in-process outbox thread has
    delivered the previous one's ``transfer.completed``, counting the round trips of the
    request's own thread only: a request overlapping a delivery can get the pool's other
    connection, where psycopg has not prepared its statements yet (a Parse round trip each)."""
    from ledger.database import db

    calls = count_calls(operation, settle=db.outbox.flush)
    return Figures(calls, counter.measure(operation, this_thread_only=True, settle=db.outbox.flush))


def check(
    scenario: str, ours: Figures, twin: Figures, call_budget: int, *, extra_trips: int = 0
) -> None:
    report = (
        f"{scenario}: flask-uow {ours.calls} calls and {ours.trips} round trips, bare "
        f"SQLAlchemy {twin.calls} calls and {twin.trips} round trips: {ours.calls - twin.calls:+d}"
        f" calls against a budget of {call_budget:+d} (see the budgets at the top of "
        "tests/test_costs.py)"
    )
    print(report)
    if scenario != "empty unit":
        assert twin.trips > 0, "the round-trip counter saw no statement at all: " + report
    assert ours.trips - twin.trips <= EXTRA_ROUND_TRIPS + extra_trips, report
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


PRIMARY_KEY_UNIT_IN_APP_PERCENT = 3.0
"""Issue #22: a primary-key unit in a Flask app context makes at most 3% more Python calls
than bare SQLAlchemy doing the same work (the issue's target, with no slack)."""


def test_a_primary_key_unit_in_a_flask_app_makes_at_most_3_percent_more_calls_than_bare(
    units: Any, backend_url: str
) -> None:
    _, read_write, _, counter = units
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = backend_url
    db = Database(metadata=Base.metadata)
    db.init_app(app)

    def ours() -> None:
        with db.unit_of_work():
            db.session.get(Item, 1)

    def twin() -> None:
        with Session(read_write, expire_on_commit=False) as session, session.begin():
            session.get(Item, 1)

    with app.app_context():
        try:
            mine, theirs = figures(counter, ours), figures(counter, twin)
        finally:
            db.dispose()
    budget = int(theirs.calls * PRIMARY_KEY_UNIT_IN_APP_PERCENT / 100)
    check("primary-key unit in a Flask app context", mine, theirs, budget)


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


# -- how the cost grows ----------------------------------------------------------------------

_ONE_ROW = sa.select(Item.name).where(Item.id == 1)


def _hook() -> None:
    pass


def check_growth(
    scenario: str,
    per: str,
    points: tuple[int, int],
    measure: Callable[[int], tuple[Figures, Figures]],
    budget_per_step: int,
) -> None:
    """flask-uow's extra calls over its twin grow by at most ``budget_per_step`` per step from
    the first point to the last (plus 5 calls of slack), and round trips stay equal."""
    (first, last), extras = points, []
    for point in points:
        ours, twin = measure(point)
        report = f"{scenario}, {point} {per}(s): flask-uow {ours}, bare SQLAlchemy {twin}"
        print(report)
        assert twin.trips > 0, "the round-trip counter saw no statement at all: " + report
        assert ours.trips - twin.trips <= EXTRA_ROUND_TRIPS, report
        extras.append(ours.calls - twin.calls)
    growth = (extras[1] - extras[0]) / (last - first)
    assert extras[1] - extras[0] <= budget_per_step * (last - first) + 5, (
        f"{scenario}: flask-uow's extra calls went from {extras[0]:+d} at {first} to "
        f"{extras[1]:+d} at {last} {per}s, {growth:+.2f} per {per} against a budget of "
        f"{budget_per_step:+d} (see the budgets at the top of tests/test_costs.py)"
    )


def test_a_units_extra_calls_stay_the_same_from_one_statement_to_a_hundred(units: Any) -> None:
    db, read_write, _, counter = units

    def measure(statements: int) -> tuple[Figures, Figures]:
        def ours() -> None:
            with db.unit_of_work():
                for _ in range(statements):
                    db.session.scalar(_ONE_ROW)

        def twin() -> None:
            with Session(read_write, expire_on_commit=False) as session, session.begin():
                for _ in range(statements):
                    session.scalar(_ONE_ROW)

        return figures(counter, ours), figures(counter, twin)

    check_growth("statements", "statement", (1, 100), measure, EXTRA_CALLS_PER_STATEMENT_BUDGET)


def test_each_nested_level_adds_no_more_calls_than_its_budget(units: Any) -> None:
    db, read_write, _, counter = units

    def measure(depth: int) -> tuple[Figures, Figures]:
        def ours_inside(levels: int) -> None:
            if not levels:
                db.session.scalar(_ONE_ROW)
                return
            with db.unit_of_work(propagation=Propagation.NESTED):
                ours_inside(levels - 1)

        def ours() -> None:
            with db.unit_of_work():
                ours_inside(depth - 1)

        def twin_inside(session: Session, levels: int) -> None:
            if not levels:
                session.scalar(_ONE_ROW)
                return
            with session.begin_nested():
                twin_inside(session, levels - 1)

        def twin() -> None:
            with Session(read_write, expire_on_commit=False) as session, session.begin():
                twin_inside(session, depth - 1)

        return figures(counter, ours), figures(counter, twin)

    check_growth("NESTED units", "level", (1, 5), measure, EXTRA_CALLS_PER_NESTED_LEVEL_BUDGET)


def test_each_on_commit_hook_adds_no_more_calls_than_its_budget(units: Any) -> None:
    db, read_write, _, counter = units

    def measure(hooks: int) -> tuple[Figures, Figures]:
        def ours() -> None:
            with db.unit_of_work():
                db.session.scalar(_ONE_ROW)
                for _ in range(hooks):
                    db.on_commit(_hook)

        def twin() -> None:
            after: list[Callable[[], None]] = []
            with Session(read_write, expire_on_commit=False) as session, session.begin():
                session.scalar(_ONE_ROW)
                for _ in range(hooks):
                    after.append(_hook)
            for callback in after:
                callback()

        return figures(counter, ours), figures(counter, twin)

    check_growth("on_commit hooks", "hook", (0, 100), measure, EXTRA_CALLS_PER_HOOK_BUDGET)


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
    # Set up as a served app is, whichever ledger test runs first in this process: the outbox's
    # tables are in the metadata that create_all() reads (ledger.database adds them), and the
    # models are configured. A first request that configures them caches its statement under
    # annotated columns that configuring then replaces: each later request's cache lookup
    # compares the two (+3 calls for GET /accounts/<id>/transfers on SQLite).
    import ledger.database  # noqa: F401
    from ledger.models import Account, Customer, Transfer
    from ledger.models import Base as LedgerBase

    sa.orm.configure_mappers()
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
    from .peer_apps.flask_apps import create_bare_app, create_uow_app, dispose

    with wire() as counter:
        ours, twin = create_uow_app(), create_bare_app()
        try:
            yield ours, twin, counter
        finally:
            dispose(twin)
            with ours.app_context():
                dispose(ours)
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
        request_figures(counter, _request(ours, method, path, body)),
        request_figures(counter, _request(twin, method, path, body)),
        budget,
        extra_trips=1 if method == "POST" else 0,
    )


# A read-only unit against a read-write unit of flask-uow doing the same primary-key read
# (calls, read-only minus read-write, SQLite / PostgreSQL / MariaDB): -21 / +15 / +151 when
# this gate came in. On PostgreSQL READ ONLY rides in the BEGIN psycopg sends, set by the
# variant's connection class (a begin listener made SQLAlchemy dispatch events around every
# statement: +91 calls before); what is left is psycopg's set_read_only() and its undoing at
# checkin. MariaDB sends SET TRANSACTION READ ONLY first: one round trip more.
READ_ONLY_OVER_READ_WRITE_CALL_BUDGET = {
    "sqlite": -21 + 5,
    "postgresql": 15 + 5,
    "mariadb": 151 + 5,
}
READ_ONLY_OVER_READ_WRITE_ROUND_TRIPS = {"sqlite": 0, "postgresql": 0, "mariadb": 1}


def test_a_read_only_unit_costs_no_more_than_a_read_write_one(
    units: Any, backend_name: str
) -> None:
    db, _, _, counter = units

    def read_only() -> None:
        with db.unit_of_work(read_only=True):
            db.session.get(Item, 1)

    def read_write() -> None:
        with db.unit_of_work():
            db.session.get(Item, 1)

    ours, theirs = figures(counter, read_only), figures(counter, read_write)
    report = (
        f"read-only unit {ours.calls} calls and {ours.trips} round trips, read-write unit "
        f"{theirs.calls} calls and {theirs.trips} round trips: {ours.calls - theirs.calls:+d} "
        f"calls (see READ_ONLY_OVER_READ_WRITE_CALL_BUDGET in tests/test_costs.py)"
    )
    print(report)
    assert theirs.trips > 0, report
    assert ours.trips - theirs.trips <= READ_ONLY_OVER_READ_WRITE_ROUND_TRIPS[backend_name], report
    assert ours.calls - theirs.calls <= READ_ONLY_OVER_READ_WRITE_CALL_BUDGET[backend_name], report
