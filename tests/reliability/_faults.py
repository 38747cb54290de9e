"""Real faults from outside the app, and checks that nothing was left behind on the server.

``ConnectionKiller`` ends the app's connections from a separate admin connection
(``pg_terminate_backend`` on PostgreSQL, ``KILL CONNECTION`` on MariaDB); ``SqliteLockHolder``
takes SQLite's write lock from another connection, ``RowLockHolder`` row locks on a server.
``Background`` runs any of them at random moments, bounded in time. ``ErrorTally`` counts
what the app's engine actually ran into.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext

from ledger.models import Transfer

from .._interrupt import HOLD_SECONDS


def backend_of(url: str | URL) -> str:
    """sqlite, postgresql or mariadb."""
    name = sa.make_url(url).get_dialect().name
    return "mariadb" if name in ("mysql", "mariadb") else name


def admin_engine(url: str | URL) -> sa.Engine:
    """An AUTOCOMMIT engine without pooling, for statements that watch or hurt the app."""
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


class Background:
    """Call ``step()`` in a daemon thread, pausing ``pause()`` seconds before each call (``first``
    seconds before the first one), until the block ends or ``seconds`` have passed. An exception
    in ``step`` stops the loop and is re-raised when the block ends, so a broken injector fails
    its test instead of hiding."""

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        pause: Callable[[], float],
        seconds: float,
        first: float = 0.05,
    ) -> None:
        self.steps = 0
        self._step = step
        self._pause = pause
        self._first = first
        self._seconds = seconds
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        pause = self._first
        while not self._stop.wait(pause) and time.monotonic() < deadline:
            pause = self._pause()
            try:
                self._step()
            except BaseException as error:  # kept and re-raised in the test's thread
                self._error = error
                return
            self.steps += 1

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} did not stop within 30 s")
        if self._error is not None and exc is None:
            raise self._error


class ConnectionKiller:
    """Terminates the app's connections to a PostgreSQL or MariaDB server, from outside.

    The app's connections are those to ``database`` (and on PostgreSQL, with
    ``application_name``, when given; on MariaDB, of ``user``, when given). The killer's own
    connection is never a victim.
    """

    def __init__(
        self,
        admin_url: str | URL,
        *,
        database: str,
        application_name: str | None = None,
        user: str | None = None,
        seed: int = 0,
    ) -> None:
        self.backend = backend_of(admin_url)
        if self.backend not in ("postgresql", "mariadb"):
            raise ValueError(f"cannot kill connections on {self.backend}")
        if user is not None and self.backend != "mariadb":
            raise ValueError("user picks MariaDB connections; use application_name elsewhere")
        self.database = database
        self.application_name = application_name
        self.user = user
        self.kills = 0
        """Connections that the server confirmed it terminated."""
        self._rng = random.Random(seed)
        self._engine = admin_engine(admin_url)
        self._lock = threading.Lock()

    def victims(self) -> list[int]:
        """Server ids of the app's connections right now."""
        with self._engine.connect() as conn:
            return self._victims(conn)

    def _victims(self, conn: sa.Connection) -> list[int]:
        if self.backend == "postgresql":
            query = (
                "SELECT pid FROM pg_stat_activity WHERE datname = :db "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            params: dict[str, Any] = {"db": self.database}
            if self.application_name is not None:
                query += " AND application_name = :app"
                params["app"] = self.application_name
        else:
            query = (
                "SELECT id FROM information_schema.processlist "
                "WHERE db = :db AND id <> CONNECTION_ID() AND command <> 'Daemon'"
            )
            params = {"db": self.database}
            if self.user is not None:
                query += " AND user = :user"
                params["user"] = self.user
        return [int(row[0]) for row in conn.execute(sa.text(query), params)]

    def _kill(self, conn: sa.Connection, victim: int) -> bool:
        if self.backend == "postgresql":
            done = conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
            return bool(done.scalar())
        try:
            conn.exec_driver_sql(f"KILL CONNECTION {int(victim)}")
        except sa.exc.DBAPIError:  # the connection ended by itself in the meantime
            return False
        return True

    def kill_one(self) -> bool:
        """Terminate one of the app's connections, picked at random; False if there was none."""
        with self._lock, self._engine.connect() as conn:
            victims = self._victims(conn)
            if not victims:
                return False
            killed = self._kill(conn, self._rng.choice(victims))
            self.kills += killed
            return killed

    def kill_all(self) -> int:
        """Terminate every connection of the app; returns how many went."""
        with self._lock, self._engine.connect() as conn:
            killed = sum(self._kill(conn, victim) for victim in self._victims(conn))
            self.kills += killed
            return killed

    def wait_until_gone(self, timeout: float = 10.0) -> None:
        """Poll until the server lists none of the app's connections: killed ones have ended.

        Terminating is asynchronous (PostgreSQL signals the backend; MariaDB marks the thread
        killed), so a connection may still be listed right after ``kill_all()``.
        """
        deadline = time.monotonic() + timeout
        while self.victims():
            if time.monotonic() > deadline:
                raise TimeoutError(f"killed connections still listed after {timeout} s")
            time.sleep(0.01)  # poll interval

    def in_background(self, *, every: tuple[float, float], seconds: float) -> Background:
        """Kill one connection at random moments, ``every`` seconds apart (uniformly)."""
        low, high = every
        rng = random.Random(self._rng.random())
        return Background(
            "connection-killer",
            self.kill_one,
            pause=lambda: rng.uniform(low, high),
            seconds=seconds,
        )

    def close(self) -> None:
        self._engine.dispose()


class SqliteLockHolder:
    """Holds SQLite's write lock (``BEGIN IMMEDIATE``) from a connection of its own.

    SQLite has no server to kill connections on; an outside writer that keeps the lock longer
    than the app's busy timeout is the real fault there: units fail with "database is locked".
    """

    def __init__(self, path: str, *, hold: tuple[float, float], seed: int = 0) -> None:
        self.path = path
        self.holds = 0
        """Times the lock was taken and held."""
        self._hold = hold
        self._rng = random.Random(seed)

    def hold_once(self) -> None:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            self._take_write_lock(conn)
            time.sleep(self._rng.uniform(*self._hold))  # the fault: hold the write lock a while
            conn.execute("ROLLBACK")
            self.holds += 1
        finally:
            conn.close()

    @staticmethod
    def _take_write_lock(conn: sqlite3.Connection, timeout: float = 30.0 + HOLD_SECONDS) -> None:
        # Poll every millisecond rather than wait in SQLite's busy handler, which sleeps up
        # to 100 ms between tries: under a steady load of writers it would never see the
        # lock free, and starve. The async bank test's episodes hold a COMMIT's answer back
        # for up to HOLD_SECONDS, and a unit of theirs may hold the lock as long: outwait it.
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(0.001)  # poll interval

    def in_background(self, *, every: tuple[float, float], seconds: float) -> Background:
        low, high = every
        rng = random.Random(self._rng.random())
        return Background(
            "sqlite-lock-holder",
            self.hold_once,
            pause=lambda: rng.uniform(low, high),
            seconds=seconds,
        )


class RowLockHolder:
    """Holds row locks (``SELECT ... FOR UPDATE``) on a server from a connection of its own.

    Each hold locks one or two rows of ``table`` (picked from ``ids``) for a while, then rolls
    back: the app's units touching them wait, and fail with a lock timeout when the hold is
    longer than their ``lock_timeout``. The holder connects with ``admin_url``, as another
    user (MariaDB) or with another application_name (PostgreSQL) than the app, so that a
    ``ConnectionKiller`` of the app leaves it alone.
    """

    def __init__(
        self,
        admin_url: str | URL,
        table: sa.Table,
        ids: list[int],
        *,
        hold: tuple[float, float],
        seed: int = 0,
    ) -> None:
        if backend_of(admin_url) == "sqlite":
            raise ValueError("SQLite has no row locks; use SqliteLockHolder")
        self.holds = 0
        """Times rows were locked and held."""
        self.lost = 0
        """Times the holder was chosen as a deadlock's victim instead."""
        self._table = table
        self._ids = ids
        self._hold = hold
        self._rng = random.Random(seed)
        self._engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)

    def hold_once(self) -> None:
        rows = self._rng.sample(self._ids, self._rng.choice((1, 2)))
        key = self._table.primary_key.columns.values()[0]
        with self._engine.connect() as conn:
            try:
                conn.execute(sa.select(key).where(key.in_(rows)).with_for_update()).all()
            except sa.exc.OperationalError as error:
                # The app's transactions lock the same rows: the holder may lose a deadlock.
                if classify(error.orig or error) not in ("deadlock", "lock_wait_timeout"):
                    raise
                self.lost += 1
                return
            time.sleep(self._rng.uniform(*self._hold))  # the fault: keep the rows locked
            conn.rollback()
            self.holds += 1

    def in_background(self, *, every: tuple[float, float], seconds: float) -> Background:
        low, high = every
        rng = random.Random(self._rng.random())
        return Background(
            "row-lock-holder",
            self.hold_once,
            pause=lambda: rng.uniform(low, high),
            seconds=seconds,
        )

    def close(self) -> None:
        self._engine.dispose()


def sqlite_path(url: str | URL) -> str:
    database = sa.make_url(url).database
    assert database, f"not a SQLite file URL: {url}"
    return database


def open_transactions(
    admin_url: str | URL, *, database: str, application_name: str | None = None
) -> int:
    """Sessions of the app that sit idle inside an open transaction on the server.

    PostgreSQL: ``state`` "idle in transaction" in ``pg_stat_activity``. MariaDB: a sleeping
    connection that owns an InnoDB transaction. SQLite: 1 if another connection holds the
    write lock (``BEGIN IMMEDIATE`` with no wait fails), else 0.
    """
    backend = backend_of(admin_url)
    if backend == "sqlite":
        probe = sqlite3.connect(sqlite_path(admin_url), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return 1
        finally:
            probe.close()
        return 0
    engine = admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                query = (
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
                params: dict[str, Any] = {"db": database}
                if application_name is not None:
                    query += " AND application_name = :app"
                    params["app"] = application_name
            else:
                query = (
                    "SELECT count(*) FROM information_schema.innodb_trx t "
                    "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                    "WHERE p.db = :db AND p.command = 'Sleep'"
                )
                params = {"db": database}
            return int(conn.execute(sa.text(query), params).scalar_one())
    finally:
        engine.dispose()


def lasting_open_transactions(
    admin_url: str | URL,
    *,
    database: str,
    application_name: str | None = None,
    seconds: float = 10.0,
) -> int:
    """``open_transactions`` once the app's background work has had ``seconds`` to finish.

    The ledger delivers its outbox messages after COMMIT on a thread of each server process,
    in short transactions of their own; one may be open at the moment the load ends. A
    transaction a request leaked stays open, and is counted after the wait.
    """
    deadline = time.monotonic() + seconds
    while True:
        found = open_transactions(admin_url, database=database, application_name=application_name)
        if found == 0 or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def checked_out(engine: sa.Engine) -> int:
    """Connections of the engine's pool that are checked out right now."""
    pool = engine.pool
    assert isinstance(pool, sa.pool.QueuePool), f"expected a QueuePool, got {pool!r}"
    return pool.checkedout()


def server_version(url: str | URL) -> str:
    """The server's own version string, e.g. "PostgreSQL 15.20 ..." or "10.11.19-MariaDB"."""
    backend = backend_of(url)
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT sqlite_version()" if backend == "sqlite" else "SELECT version()"
            version = str(conn.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()
    return f"SQLite {version}" if backend == "sqlite" else version


class ErrorTally:
    """Counts the database errors an engine ran into, by kind, from its ``handle_error`` event."""

    def __init__(self, engine: sa.Engine) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._engine = engine
        event.listen(engine, "handle_error", self._record)

    def _record(self, context: ExceptionContext) -> None:
        kind = classify(context.original_exception, disconnect=context.is_disconnect)
        with self._lock:
            self.counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))

    def remove(self) -> None:
        event.remove(self._engine, "handle_error", self._record)


def classify(error: BaseException, *, disconnect: bool = False) -> str:
    """A short name for a driver error: disconnect, serialization_failure, deadlock, ..."""
    if disconnect:
        return "disconnect"
    args = getattr(error, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if code == 1213:  # MySQL and MariaDB report it with SQLSTATE 40001 too
        return "deadlock"
    if code == 1205:
        return "lock_wait_timeout"
    if code == 1020:  # MariaDB's write conflict under innodb_snapshot_isolation
        return "serialization_failure"
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate == "40001":
        return "serialization_failure"
    if sqlstate == "40P01":
        return "deadlock"
    if sqlstate == "55P03":
        return "lock_timeout"
    if sqlstate == "57014":
        return "query_canceled"
    if "database is locked" in str(error):
        return "sqlite_locked"
    kind = type(error).__name__
    return f"{kind} {code or sqlstate}" if code or sqlstate else kind


def stored_transfers(connection: sa.Connection) -> dict[int, tuple[int, int, int]]:
    """Every stored transfer, by id: (from account, to account, amount)."""
    rows = connection.execute(
        sa.select(Transfer.id, Transfer.from_account_id, Transfer.to_account_id, Transfer.amount)
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}
