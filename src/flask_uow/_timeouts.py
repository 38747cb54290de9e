"""Per-unit statement and lock timeouts, applied to one transaction at a time.

A unit that asks for timeouts binds its session to a variant of its engine that carries
them; listeners on that variant only (never on the engine every other unit uses) send
them with the transaction:

- PostgreSQL: ``set_config(..., true)`` (``SET LOCAL``) on the cursor of the
  transaction's first statement, after BEGIN (on a cursor of its own when that statement
  streams through a server-side cursor); the server forgets it when the
  transaction ends. One extra statement per unit, only for units with timeouts.
- MariaDB / MySQL: each statement is sent as ``SET STATEMENT innodb_lock_wait_timeout=..,
  max_statement_time=.. FOR ...``: nothing is left on the connection, nothing to reset.
  ``innodb_lock_wait_timeout`` counts whole seconds, so a lock timeout is rounded up.
- SQLite: the lock timeout is the connection's busy timeout, set before ``BEGIN`` and
  put back when the connection returns to the pool. SQLite has no statement timeout.

When a statement of such a unit fails because a timeout expired, the unit rolls back
and raises ``UnitTimeout``, with the driver's error as ``__cause__``.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from ._errors import UnitOfWorkError, UnitTimeout

TIMEOUTS_OPTION = "flask_uow_timeouts"
"""Execution option of the engine variant that carries a unit's timeouts."""

LOCK = "lock"
STATEMENT = "statement"

_PENDING = "flask_uow_timeouts_pending"
_SQLITE_SAVED = "flask_uow_busy_timeout"

_POSTGRESQL_CODES = {"55P03": LOCK, "57014": STATEMENT}
"""lock_not_available, query_canceled (what statement_timeout raises)."""

_MYSQL_CODES = {1205: LOCK, 1969: STATEMENT}
"""ER_LOCK_WAIT_TIMEOUT, and MariaDB's ER_STATEMENT_TIMEOUT (max_statement_time)."""

Seconds = float | int | timedelta


def to_seconds(value: Seconds | None, name: str) -> float | None:
    """Validate a timeout given as seconds or a ``timedelta``; 0 means "none"."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{name} takes seconds (a number) or a datetime.timedelta, got {value!r}.")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{name} must be a positive number of seconds (0 for no timeout), got {value!r}."
        )
    return seconds


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The timeouts of one transaction, in seconds; None (or 0) for no limit."""

    statement: float | None = None
    lock: float | None = None
    retry_lock_timeouts: bool = False

    @classmethod
    def from_options(
        cls,
        statement_timeout: Seconds | None,
        lock_timeout: Seconds | None,
        retry_lock_timeouts: bool = False,
    ) -> Timeouts | None:
        """The options given to a unit (None where it takes the Database's default)."""
        statement = to_seconds(statement_timeout, "statement_timeout")
        lock = to_seconds(lock_timeout, "lock_timeout")
        if statement is None and lock is None and not retry_lock_timeouts:
            return None
        return cls(statement, lock, retry_lock_timeouts)

    def over(self, default: Timeouts | None) -> Timeouts | None:
        """These options with the gaps filled from ``default``; None when nothing is limited."""
        statement, lock = self.statement, self.lock
        if default is not None:
            statement = default.statement if statement is None else statement
            lock = default.lock if lock is None else lock
        if not statement and not lock:
            return None
        return Timeouts(statement or None, lock or None, self.retry_lock_timeouts)

    @staticmethod
    def resolve(asked: Timeouts | None, default: Timeouts | None) -> Timeouts | None:
        """The timeouts of a transaction: what its unit asked for, else the default."""
        if asked is None:
            return default
        return asked.over(default)

    def kind_of(self, error: BaseException) -> str | None:
        """``"lock"`` or ``"statement"`` when ``error`` is one of these timeouts expiring."""
        if isinstance(error, UnitTimeout):
            return error.kind
        kind = timeout_kind(error)
        if kind == LOCK and self.lock is None:
            return None
        if kind == STATEMENT and self.statement is None:
            return None
        return kind

    def retryable(self, error: BaseException) -> bool | None:
        """Whether a retry may follow ``error``; None when it is not one of these timeouts."""
        kind = self.kind_of(error)
        if kind is None:
            return None
        return kind == LOCK and self.retry_lock_timeouts

    def error_for(self, error: BaseException, opened_at: str | None) -> UnitTimeout | None:
        """The ``UnitTimeout`` to raise instead of ``error``, or None if it is not a timeout."""
        if isinstance(error, UnitTimeout):
            return None
        kind = self.kind_of(error)
        if kind is None:
            return None
        limit = self.lock if kind == LOCK else self.statement
        assert limit is not None
        if kind == LOCK:
            what = (
                f"waited longer than its lock_timeout ({_show(limit)}) for a lock held by "
                "another transaction"
            )
            fix = (
                "Find the transaction holding the lock (pg_locks / information_schema."
                "innodb_trx), shorten it, raise lock_timeout, or pass retry_lock_timeouts=True "
                "with retries= to @db.transactional to run the unit again"
            )
        else:
            what = f"ran a statement longer than its statement_timeout ({_show(limit)})"
            fix = "Make the statement faster (an index, less data) or raise statement_timeout"
        message = (
            f"The unit of work opened at {opened_at} {what}; its transaction was rolled back. "
            f"{fix}."
        )
        return UnitTimeout(message, kind=kind, seconds=limit)


def _show(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


_NOWAIT = re.compile(r"\bNOWAIT\b", re.IGNORECASE)


def is_nowait(error: BaseException) -> bool:
    """True when ``error`` is a lock that ``NOWAIT`` found taken, which is not a timeout.

    PostgreSQL says so itself (55P03 "could not obtain lock", where a lock timeout says
    "canceling statement due to lock timeout"); MariaDB reports a lock wait timeout (1205),
    so there the failed statement's ``NOWAIT`` tells. Such a unit waited for nothing, and
    running it again would only ask the same question: it is raised unchanged, never retried.
    """
    if not isinstance(error, DBAPIError):
        return False
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate == "55P03" and "lock timeout" not in str(original):
        return True
    return bool(error.statement and _NOWAIT.search(error.statement))


def timeout_kind(error: BaseException) -> str | None:
    """``"lock"`` or ``"statement"`` when a driver error says such a timeout expired."""
    if not isinstance(error, DBAPIError) or is_nowait(error):
        return None
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in _POSTGRESQL_CODES:
        return _POSTGRESQL_CODES[sqlstate]
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):
        return _MYSQL_CODES.get(args[0])
    if "database is locked" in str(original):
        return LOCK
    return None


# -- engine variants --------------------------------------------------------------------------

_variants: weakref.WeakKeyDictionary[sa.Engine, dict[Timeouts, sa.Engine]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
_sqlite_pools: weakref.WeakSet[Any] = weakref.WeakSet()


def engine_with(engine: sa.Engine, timeouts: Timeouts) -> sa.Engine:
    """A variant of ``engine`` whose transactions run with ``timeouts`` (cached)."""
    cached = _variants.get(engine)
    if cached is not None:
        variant = cached.get(timeouts)
        if variant is not None:
            return variant
    with _lock:
        per_engine = _variants.setdefault(engine, {})
        variant = per_engine.get(timeouts)
        if variant is None:
            variant = per_engine[timeouts] = _make_variant(engine, timeouts)
    return variant


def _make_variant(engine: sa.Engine, timeouts: Timeouts) -> sa.Engine:
    variant = engine.execution_options(**{TIMEOUTS_OPTION: timeouts})
    # A variant's own connection class (psycopg's transaction modes) is not inherited.
    variant._connection_cls = engine._connection_cls
    name = engine.dialect.name
    if name == "postgresql":
        settings = []
        if timeouts.statement:
            settings.append(f"set_config('statement_timeout', '{_ms(timeouts.statement)}', true)")
        if timeouts.lock:
            settings.append(f"set_config('lock_timeout', '{_ms(timeouts.lock)}', true)")
        statement = "SELECT " + ", ".join(settings)
        event.listen(variant, "begin", _mark_pending)
        event.listen(variant, "before_cursor_execute", _postgresql_sender(statement))
    elif name in ("mysql", "mariadb"):
        settings = []
        if timeouts.lock:
            settings.append(f"innodb_lock_wait_timeout={math.ceil(timeouts.lock)}")
        if timeouts.statement:
            settings.append(f"max_statement_time={timeouts.statement:.6f}")
        prefix = "SET STATEMENT " + ", ".join(settings) + " FOR "
        event.listen(variant, "before_cursor_execute", _mysql_prefixer(prefix), retval=True)
    elif name == "sqlite" and timeouts.lock:
        event.listen(variant, "begin", _sqlite_busy_timeout(_ms(timeouts.lock)))
        pool = engine.pool
        if pool not in _sqlite_pools:
            _sqlite_pools.add(pool)
            event.listen(pool, "checkin", _sqlite_restore)
    return variant


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _mark_pending(connection: Connection) -> None:
    # Runs before the engine's own begin listeners (those of a variant come first), which
    # may still change how the driver begins (READ ONLY): only remember to send the
    # settings with the first statement, which runs after all of them.
    connection.info[_PENDING] = True


def _postgresql_sender(statement: str) -> Any:
    def send(
        connection: Connection,
        cursor: Any,
        sql: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        # SET TRANSACTION (how isolation levels and READ ONLY reach drivers that take no
        # attribute for them, psycopg's async connection among them) must come first in
        # the transaction: send the settings with the statement after it.
        if sql[:15].upper() == "SET TRANSACTION":
            return
        if connection.info.pop(_PENDING, False):
            if getattr(cursor, "name", None) is None:
                cursor.execute(statement)
                return
            # A streamed statement's cursor is a named server-side one, on which the
            # settings would only be DECLAREd, never run: send them on a cursor of their own.
            own = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                own.execute(statement)
            finally:
                own.close()

    return send


_NOT_PREFIXED = ("SAVEPOINT", "RELEASE", "ROLLBACK", "SET ", "XA ")


def _mysql_prefixer(prefix: str) -> Any:
    def prefixed(
        connection: Connection,
        cursor: Any,
        sql: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        if sql.lstrip()[:9].upper().startswith(_NOT_PREFIXED):
            return sql, parameters
        if not getattr(connection.dialect, "is_mariadb", False):
            raise UnitOfWorkError(
                "statement_timeout and lock_timeout need MariaDB's SET STATEMENT, which MySQL "
                "does not have. Set innodb_lock_wait_timeout and max_execution_time on the "
                "server or in the connection's init_command instead."
            )
        return prefix + sql, parameters

    return prefixed


def _sqlite_busy_timeout(milliseconds: int) -> Any:
    def set_busy_timeout(connection: Connection) -> None:
        # Runs before the engine's own begin listener sends BEGIN (IMMEDIATE), which is
        # where a writer waits for the lock.
        fairy = connection.connection
        driver_connection: Any = fairy.dbapi_connection
        info = fairy.info
        if _SQLITE_SAVED not in info:
            info[_SQLITE_SAVED] = _sqlite_pragma(driver_connection, "PRAGMA busy_timeout")
        _sqlite_pragma(driver_connection, f"PRAGMA busy_timeout = {milliseconds}")

    return set_busy_timeout


def _sqlite_restore(driver_connection: Any, record: ConnectionPoolEntry) -> None:
    saved = record.info.pop(_SQLITE_SAVED, None)
    if saved is None or driver_connection is None:
        return
    try:
        _sqlite_pragma(driver_connection, f"PRAGMA busy_timeout = {int(saved)}")
    except Exception:
        record.invalidate()


def _sqlite_pragma(driver_connection: Any, statement: str) -> Any:
    # Through a cursor, read to the end: sqlite3 and SQLAlchemy's aiosqlite adapter both
    # run it so (the adapter's connection has no execute(), or an unawaited coroutine one).
    cursor = driver_connection.cursor()
    try:
        cursor.execute(statement)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return rows[0][0] if rows else None
