"""Test helpers: run a test's units of work inside one transaction that is always undone."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from secrets import token_hex
from threading import get_ident
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import SessionTransaction

from ._database import Database
from ._errors import UnitOfWorkError
from ._session import UnitSession
from ._unit import UnitOfWork, live_units

__all__ = ["isolated", "isolated_async", "scratch_database"]


@contextmanager
def isolated(db: Database) -> Iterator[Connection]:
    """Run every unit of work on one connection, and undo it all at exit.

    Entering checks out one connection from ``db.engine`` (the current Flask app's, inside
    an app context) and BEGINs an outer transaction. Inside, each outermost unit runs in a
    SAVEPOINT of it: the unit's COMMIT releases the savepoint and then runs its
    ``on_commit`` hooks, its ROLLBACK rolls back to the savepoint and runs its
    ``on_rollback`` hooks, so code under test behaves as in production: a failed unit
    undoes only its own work, and the units after it see what earlier units committed.
    Leaving rolls the outer transaction back: the database is exactly as before, also
    when the block raises.

    Differences from production, by design:

    - ``Propagation.REQUIRES_NEW`` becomes a SAVEPOINT on the same connection, not a
      second connection: it sees the uncommitted work of the unit that opened it, and its
      own work is undone if that unit, having run SQL before it, later rolls back.
    - ``read_only`` units still refuse flushes, but the server-side READ ONLY transaction
      and ``isolation_level`` are not applied (they cannot change inside a transaction).
    - The whole block is one database transaction: PostgreSQL's ``now()`` returns the
      same time in every unit, and locks are held until the block ends.
    - On PostgreSQL, deferred constraints are checked when an outermost unit commits, as
      COMMIT would; a REQUIRES_NEW unit's are checked when its enclosing unit commits.
      SQLite's deferred foreign keys are not checked at all.
    - While the block is active, a unit of this Database opened in any other thread
      raises ``UnitOfWorkError`` instead of writing to the database for real.

    Yields the connection, for assertions in raw SQL inside the same transaction.
    Entering it inside a unit of work, or twice at once for one Database, raises
    ``UnitOfWorkError``; so does leaving it with a unit still open (the unit is rolled
    back first). See ``docs/testing.md`` and the ``isolated_db`` pytest fixture.
    """
    _refuse_to_enter(db)
    connection = db.engine.connect()
    leaked: list[UnitOfWork] = []
    try:
        outer = connection.begin()
        deferred = _DeferredConstraintCheck.install(connection)
        # Every thread sees the isolation: units in other threads find it and refuse to
        # run, instead of writing to the database for real.
        db.runtime.pin(connection)
        try:
            yield connection
        except BaseException:
            _end_leaked_units(db)
            raise
        else:
            leaked = _end_leaked_units(db)
        finally:
            db.runtime.unpin()
            if deferred is not None:
                deferred.remove()
            if outer.is_active:
                outer.rollback()
    finally:
        connection.close()
    if leaked:
        where = ", ".join(unit.opened_at or repr(unit) for unit in leaked)
        raise UnitOfWorkError(
            f"A unit of work was still active when isolated() ended ({where}); it was rolled "
            "back. End every unit inside the isolated block: use 'with db.unit_of_work():' or "
            "@db.transactional rather than calling __enter__() by hand."
        )


@asynccontextmanager
async def isolated_async(db: Database) -> AsyncIterator[Connection]:
    """``isolated()`` for async units: ``async with isolated_async(db):`` in an async test.

    Checks out one connection of the Database's async engine and BEGINs an outer
    transaction; each outermost async unit inside runs in a SAVEPOINT of it, exactly as
    ``isolated()`` describes, and leaving rolls everything back. Sync units are refused
    inside (and async units inside ``isolated()``). Units of the block share one
    connection: run them one task at a time (a ``gather`` of units would interleave on
    it). Yields the connection's sync face, for assertions through ``run_sync``.
    """
    _refuse_to_enter(db)
    connection = await db.async_engine.connect()
    leaked: list[UnitOfWork] = []
    try:
        outer = await connection.begin()
        sync_connection = connection.sync_connection
        assert sync_connection is not None
        db.runtime.pin(sync_connection, async_connection=connection)
        try:
            yield sync_connection
        except BaseException:
            await _end_leaked_units_async(db)
            raise
        else:
            leaked = await _end_leaked_units_async(db)
        finally:
            db.runtime.unpin()
            if outer.is_active:
                await outer.rollback()
    finally:
        await connection.close()
    if leaked:
        where = ", ".join(unit.opened_at or repr(unit) for unit in leaked)
        raise UnitOfWorkError(
            f"A unit of work was still active when isolated_async() ended ({where}); it was "
            "rolled back. End every unit inside the block with 'async with "
            "db.unit_of_work():' or @db.transactional."
        )


async def _end_leaked_units_async(db: Database) -> list[UnitOfWork]:
    leaked = live_units(db.runtime)
    for unit in reversed(leaked):
        await unit.abandon_async()
    return [unit for unit in leaked if unit.is_outermost]


def _refuse_to_enter(db: Database) -> None:
    active = db.runtime.isolation
    if active is not None:
        where = "this thread" if active.thread == get_ident() else "another thread"
        raise UnitOfWorkError(
            f"isolated() is already active for this Database in {where}; it cannot be entered "
            "again until that block ends. Use one isolated() block per test."
        )
    if db.current is not None:
        raise UnitOfWorkError(
            "isolated() was entered inside a unit of work. Enter it outside any unit, at the "
            "start of the test, so that every unit of the test runs inside it."
        )


def _end_leaked_units(db: Database) -> list[UnitOfWork]:
    """Roll back and forget units of this context that are still active; return outermost ones."""
    leaked = live_units(db.runtime)
    for unit in reversed(leaked):
        unit.abandon()
    return [unit for unit in leaked if unit.is_outermost]


class _DeferredConstraintCheck:
    """Checks PostgreSQL deferred constraints where an outermost unit's COMMIT would.

    Inside ``isolated()`` a unit's COMMIT is a RELEASE SAVEPOINT, which leaves deferred
    constraints unchecked. Just before an outermost unit's savepoint is released, this runs
    ``SET CONSTRAINTS ALL IMMEDIATE`` in a throwaway savepoint: a violation raises the same
    ``IntegrityError`` that COMMIT raises (after rolling the unit's work back), and rolling
    back the throwaway savepoint restores the deferred mode for the units that follow.
    """

    _PROBE = "flask_uow_deferred_check"

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.open_units: list[str] = []
        """Savepoint names of unit sessions on the connection, outermost first."""

    @classmethod
    def install(cls, connection: Connection) -> _DeferredConstraintCheck | None:
        """Start checking on ``connection``, if it is PostgreSQL with deferrable constraints."""
        if connection.dialect.name != "postgresql":
            return None
        has_deferrable = connection.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE condeferrable)"
        ).scalar()
        if not has_deferrable:
            return None
        check = cls(connection)
        event.listen(UnitSession, "after_begin", check._session_began)
        event.listen(connection, "release_savepoint", check._releasing)
        event.listen(connection, "rollback_savepoint", check._rolling_back)
        return check

    def remove(self) -> None:
        event.remove(UnitSession, "after_begin", self._session_began)
        event.remove(self.connection, "release_savepoint", self._releasing)
        event.remove(self.connection, "rollback_savepoint", self._rolling_back)

    def _session_began(
        self, session: UnitSession, transaction: SessionTransaction, connection: Connection
    ) -> None:
        if connection is not self.connection or transaction.parent is not None:
            return
        savepoint = connection.get_nested_transaction()
        if savepoint is not None:
            self.open_units.append(savepoint._savepoint)

    def _releasing(self, connection: Connection, name: str, context: Any) -> None:
        if name not in self.open_units:
            return
        outermost = self.open_units[0] == name
        self.open_units.remove(name)
        if not outermost:
            return
        connection.exec_driver_sql(f"SAVEPOINT {self._PROBE}")
        try:
            connection.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")
        except BaseException:
            # COMMIT would have rolled back the whole transaction; SQLAlchemy will not roll
            # back a savepoint whose release failed, so undo the unit's work here.
            connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {self._PROBE}")
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {self._PROBE}")

    def _rolling_back(self, connection: Connection, name: str, context: Any) -> None:
        if name in self.open_units:
            self.open_units.remove(name)


@contextmanager
def scratch_database(url: str | URL, name: str | None = None) -> Iterator[URL]:
    """Create an empty database for a test session, yield its URL, and drop it at exit.

    On PostgreSQL and MariaDB/MySQL, connects to ``url`` (whose database must exist, such
    as ``postgres``), runs ``CREATE DATABASE name`` (dropping a leftover one of that name
    first) and yields ``url`` with the database replaced; at exit the database is dropped,
    on PostgreSQL 13+ even with connections still open. On SQLite it yields a new file in a
    temporary folder that is deleted at exit (an in-memory ``url`` is yielded unchanged).

    ``name`` defaults to the database of ``url`` plus a random suffix. With pytest-xdist,
    name it after the worker (``PYTEST_XDIST_WORKER``) so that each worker has its own.
    The tables are not created: that is ``Database.create_all()``'s or your migrations' job.
    """
    base = sa.make_url(url)
    backend = base.get_backend_name()
    if backend == "sqlite" and base.database in (None, "", ":memory:"):
        yield base  # every connection gets an empty database of its own already
        return
    name = name or f"{Path(base.database or 'flask_uow').stem}_{token_hex(4)}"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"scratch database names are letters, digits and _, got {name!r}")
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="flask_uow_")
        try:
            yield base.set(database=str(Path(folder, f"{name}.db")))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if backend == "postgresql":
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    elif backend in ("mysql", "mariadb"):
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    else:
        raise ValueError(
            f"scratch_database() supports PostgreSQL, MariaDB/MySQL and SQLite, not {backend!r}."
        )
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(drop)
            connection.exec_driver_sql(create)
        try:
            yield base.set(database=name)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(drop)
    finally:
        admin.dispose()
