"""Engines prepared for units of work: per-dialect setup and per-unit option variants."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import ConnectionPoolEntry

from ._pgbouncer import guard_prepared_statements
from ._timeouts import Timeouts

READ_ONLY_OPTION = "flask_uow_read_only"
"""Execution option set on the engine variant used by read-only units."""

ISOLATION_LEVEL_OPTION = "flask_uow_isolation_level"
"""Execution option with the isolation level a unit asked for, set per transaction.

flask-uow sets it with ``SET TRANSACTION`` when the unit's transaction begins, rather than
with SQLAlchemy's per-connection ``isolation_level``, which costs a round trip at checkout
and another at checkin, either of which can fail on a connection that died in the pool.
"""

ISOLATION_LEVELS = frozenset(
    {"SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED", "READ UNCOMMITTED"}
)

BEFORE_READ_ONLY_END_OPTION = "flask_uow_before_read_only_end"
"""Execution option: a callable given a read-only psycopg unit's connection just before its
transaction ends (read replicas arm their answer deadline with it)."""

WRITE_LOCK_OPTION = "flask_uow_write_lock"
"""Execution option asking SQLite for ``BEGIN IMMEDIATE``: set for read-write units only."""

SQLITE_BUSY_TIMEOUT_SECONDS = 15.0


def masked(url: URL | str) -> str:
    """Render a database URL with its password replaced by ``***``."""
    return sa.make_url(url).render_as_string(hide_password=True)


def create_engine(
    url: URL | str,
    options: Mapping[str, Any],
    *,
    sqlite_wal: bool = True,
    sqlite_foreign_keys: bool = True,
    asynchronous: bool = False,
) -> sa.Engine:
    """Create an engine from ``url`` and ``options`` and prepare it for units of work.

    With ``asynchronous``, ``url`` names an async driver and the engine returned is the
    sync face (``sync_engine``) of an ``AsyncEngine``: listeners and variants work on it.

    SQLite gets foreign keys (unless ``sqlite_foreign_keys`` is False, for a legacy schema
    that breaks them), a busy timeout and working SAVEPOINTs; a SQLite file also gets
    write-ahead logging and ``synchronous=NORMAL`` unless ``sqlite_wal=False`` (see
    docs/sqlite.md). PostgreSQL and MariaDB engines stay stock: only the variants that
    read-only units and isolation levels use get listeners (see :class:`EngineVariants`).
    """
    url = sa.make_url(url)
    options = dict(options)
    if url.get_backend_name() == "sqlite":
        connect_args = dict(options.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_SECONDS)
        options["connect_args"] = connect_args
    if asynchronous:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url, **options).sync_engine
    else:
        engine = sa.create_engine(url, **options)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        guard_prepared_statements(engine)  # behind PgBouncer, stop preparing statements
    if engine.dialect.name == "sqlite":
        wal = sqlite_wal and not _is_memory(engine)
        if wal:
            _WAL_ENGINES.add(engine)
        connect = _sqlite_on_connect_wal if wal else _sqlite_on_connect
        if not sqlite_foreign_keys:
            connect = _sqlite_on_connect_wal_without_fk if wal else _sqlite_on_connect_without_fk
        event.listen(engine, "connect", connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


_WAL_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
"""SQLite engines whose connections journal in WAL mode."""


def _is_memory(engine: sa.Engine) -> bool:
    database = engine.url.database
    return (
        database in (None, "", ":memory:")
        or database.startswith("file::memory:")
        or engine.url.query.get("mode") == "memory"
    )


def _sqlite_on_connect_without_fk(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # pysqlite starts transactions late and behind SQLAlchemy's back, which breaks
    # SAVEPOINT; take over: no implicit BEGIN, ours is emitted in _sqlite_on_begin.
    dbapi_connection.isolation_level = None


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_on_connect_without_fk(dbapi_connection, record)
    _pragma(dbapi_connection, "PRAGMA foreign_keys = ON")


def _sqlite_on_connect_wal(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_on_connect(dbapi_connection, record)
    _sqlite_wal(dbapi_connection)


def _sqlite_on_connect_wal_without_fk(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_on_connect_without_fk(dbapi_connection, record)
    _sqlite_wal(dbapi_connection)


def _sqlite_wal(dbapi_connection: Any) -> None:
    # Write-ahead logging: readers never wait for the writer, nor the writer for readers.
    # The mode is stored in the file, so this is a no-op after the first connection; a file
    # that cannot switch (opened read-only, say) keeps the mode it has.
    try:
        _pragma(dbapi_connection, "PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        pass
    # In WAL mode NORMAL is safe from corruption; a commit can be lost on power failure
    # (not on a crash of the process) until the next checkpoint. See docs/sqlite.md.
    _pragma(dbapi_connection, "PRAGMA synchronous = NORMAL")


def _pragma(dbapi_connection: Any, statement: str) -> None:
    # Through a cursor, which SQLAlchemy's aiosqlite adapter awaits too (on SQLAlchemy 2.0
    # its connection.execute() is aiosqlite's coroutine, which would leave it unfinished).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    dbapi_connection: Any = connection.connection.dbapi_connection
    # An isolation level set on a connection makes pysqlite manage transactions again;
    # keep it out of the way before emitting our own BEGIN (only when set: through
    # aiosqlite, setting it is a trip to the driver's thread).
    if dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None
    # A read-write unit takes the write lock up front, so two writers queue on the busy
    # timeout instead of deadlocking when both try to upgrade a shared lock (in WAL mode an
    # upgrade from a stale snapshot fails at once, without waiting). Everything else
    # (read-only units, plain engine connections) begins deferred.
    immediate = connection.get_execution_options().get(WRITE_LOCK_OPTION)
    statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    if connection.dialect.is_async:
        # aiosqlite: SQLAlchemy 2.0's adapted cursor keeps the statement open after close(),
        # and COMMIT then fails ("SQL statements in progress"); its own path closes it.
        connection.exec_driver_sql(statement)
        return
    # Straight to the driver: through SQLAlchemy's execution path this BEGIN would cost as
    # much Python as a small query. So it does not reach before_cursor_execute listeners or
    # the echo log (which shows "BEGIN (implicit)"); errors are wrapped as SQLAlchemy wraps
    # them ("database is locked" is an sqlalchemy.exc.OperationalError).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
    except connection.dialect.loaded_dbapi.Error as error:
        raise sa.exc.DBAPIError.instance(
            statement,
            None,
            error,
            connection.dialect.loaded_dbapi.Error,
            dialect=connection.dialect,
        ) from error
    finally:
        cursor.close()


def _transaction_modes(connection: Connection) -> list[str]:
    options = connection.get_execution_options()
    modes = []
    level = options.get(ISOLATION_LEVEL_OPTION)
    if level:
        modes.append(f"ISOLATION LEVEL {level}")
    if options.get(READ_ONLY_OPTION):
        modes.append("READ ONLY")
    return modes


def _set_transaction(connection: Connection) -> None:
    # MariaDB: SET TRANSACTION without SESSION applies to the next transaction only, which
    # the unit's first statement starts; nothing needs resetting when the connection goes
    # back. PostgreSQL drivers other than psycopg: the driver sends BEGIN with the first
    # statement, which is this one. Only variant engines listen, so there are modes to set.
    connection.exec_driver_sql("SET TRANSACTION " + ", ".join(_transaction_modes(connection)))


def _psycopg_set_modes(connection: Connection) -> bool:
    """Give psycopg the unit's READ ONLY and isolation level; False if the driver refused.

    psycopg 3 puts them into the BEGIN it sends with the first statement: no extra round
    trip, no SQL. The values the connection had are kept in the pool entry and put back at
    checkin, so an engine-wide isolation_level keeps working. A driver that refuses (its
    connection is broken) leaves them to SQL, which SQLAlchemy reports as a lost connection.
    """
    options = connection.get_execution_options()
    read_only = bool(options.get(READ_ONLY_OPTION))
    level = options.get(ISOLATION_LEVEL_OPTION)
    fairy = connection.connection
    # Read the settings from psycopg's own connection; change them through the DBAPI
    # connection's set_*() methods, which SQLAlchemy's async adapter awaits (its read_only
    # is a read-only property): async units then begin READ ONLY in one round trip too.
    driver_connection: Any = fairy.driver_connection
    setter: Any = fairy.dbapi_connection
    changed = fairy.info.setdefault(_CHANGED, {})
    try:
        if read_only:
            changed.setdefault("read_only", driver_connection.read_only)
            setter.set_read_only(True)
        if level is not None:
            changed.setdefault("isolation_level", driver_connection.isolation_level)
            setter.set_isolation_level(_PSYCOPG_LEVELS[level])
    except Exception:
        fairy.info.pop(_CHANGED, None)
        return False
    return True


class _PsycopgModesConnection(Connection):
    """A connection of a psycopg variant engine: the unit's modes go into psycopg's BEGIN.

    Set as the transaction begins, by this subclass rather than by a ``begin`` listener: an
    engine with listeners dispatches its events around every statement, some 90 Python
    calls in a one-query unit, which made read-only units slower than read-write ones.
    """

    _modes_by_sql = False

    def _begin_impl(self, transaction: Any) -> None:
        if not _psycopg_set_modes(self):
            self._modes_by_sql = True  # sent by begin(), once the transaction is ours
        super()._begin_impl(transaction)

    def begin(self) -> Any:
        transaction = super().begin()
        if self._modes_by_sql:
            self._modes_by_sql = False
            _set_transaction(self)
        return transaction


class _PsycopgReadOnlyConnection(_PsycopgModesConnection):
    """A connection of a read-only variant: its transaction ends as ``_psycopg_end_read_only``
    says (a healthy one with COMMIT), then SQLAlchemy's rollback finds nothing to do."""

    def _rollback_impl(self) -> None:
        before_end = self._execution_options.get(BEFORE_READ_ONLY_END_OPTION)
        if before_end is not None:
            before_end(self)
        _psycopg_end_read_only(self)
        super()._rollback_impl()


def _psycopg_end_read_only(connection: Connection) -> None:
    # psycopg forgets its prepared statements on every ROLLBACK (and sends DEALLOCATE ALL
    # when it had some), so units ending in ROLLBACK never run prepared queries and wipe
    # those of the read-write units sharing the pool. A READ ONLY transaction wrote
    # nothing: end a healthy one with COMMIT instead, after which the driver's rollback,
    # which SQLAlchemy calls next, has nothing to do. A failed transaction, or a failing
    # COMMIT, is left to that rollback, which reports the error as SQLAlchemy does. (What a
    # READ ONLY transaction may still change, a session-level SET or a temporary table,
    # outlives the unit as after any COMMIT.) A unit that failed asked for ROLLBACK: it gets it.
    fairy = connection.connection
    if fairy.info.pop(END_WITH_ROLLBACK, False):
        return
    driver_connection: Any = fairy.dbapi_connection
    if driver_connection is None:
        return
    # psycopg's pgconn answers with an int; its info builds an object and an enum member
    # (SQLAlchemy's async adapter has only info).
    pgconn = getattr(driver_connection, "pgconn", None)
    status = (driver_connection.info if pgconn is None else pgconn).transaction_status
    if status != _PG_INTRANS:
        return
    try:
        driver_connection.commit()
    except Exception:
        pass


def _psycopg_on_checkin(driver_connection: Any, record: ConnectionPoolEntry) -> None:
    # Back in the pool: give the connection its own settings again, for the units that
    # check it out next from the stock engine (which has no listeners to do it).
    changed = record.info.pop(_CHANGED, None)
    if not changed or driver_connection is None:
        return
    try:
        for attribute, value in changed.items():
            getattr(driver_connection, f"set_{attribute}")(value)  # awaited by async adapters
    except Exception:
        record.invalidate()  # cannot be trusted with a unit's settings left on it


END_WITH_ROLLBACK = "flask_uow_end_with_rollback"
"""Set in a pooled connection's ``info`` by a read-only unit that failed: psycopg's read-only
ending then leaves the ROLLBACK alone instead of committing first."""

_CHANGED = "flask_uow_changed"
"""Key in a pooled connection's ``info``: driver attributes a unit changed, with old values."""

_PG_INTRANS = 2
"""psycopg.pq.TransactionStatus.INTRANS: a transaction is open and has not failed."""

_PSYCOPG_LEVELS = {
    "READ UNCOMMITTED": 1,
    "READ COMMITTED": 2,
    "REPEATABLE READ": 3,
    "SERIALIZABLE": 4,
}
"""psycopg.IsolationLevel values, by name."""


def normalize_isolation_level(level: str) -> str:
    """Validate an isolation level name and return it as SQL spells it."""
    spelled = " ".join(level.replace("_", " ").upper().split())
    if spelled == "AUTOCOMMIT":
        raise ValueError(
            "isolation_level='AUTOCOMMIT' would turn the unit into no transaction at all; "
            "use db.engine.connect() with execution_options(isolation_level='AUTOCOMMIT') "
            "for statements that must run outside a transaction."
        )
    if spelled not in ISOLATION_LEVELS:
        raise ValueError(
            f"Unknown isolation_level {level!r}; use one of {', '.join(sorted(ISOLATION_LEVELS))}."
        )
    return spelled


class ReadChoice(NamedTuple):
    """Where a read-only unit runs: a replica's engine, or None for the primary."""

    engine: sa.Engine | None
    replica: str | None
    """The replica's URL (password masked), or None on the primary."""


class ReadRouting(Protocol):
    """What the units of an engine ask its read replicas (``flask_uow._replicas.Replicas``)."""

    def engine_for_read(
        self, after: int | None = None, *, isolation_level: str | None = None
    ) -> ReadChoice:
        """Where a read-only outermost unit runs; ``after``: a position it must see."""

    def replica_failed(self, choice: ReadChoice, error: BaseException) -> None:
        """A unit could not check a connection out of ``choice``'s replica: leave it out."""

    def watch_primary(self, engine: sa.Engine) -> None:
        """Track which transactions on the primary ``engine`` write."""

    def note_commit(self, engine: sa.Engine) -> int | None:
        """After a commit on the primary ``engine``: record the causal position."""

    def note_outcome_unknown(self, engine: sa.Engine) -> None:
        """After a COMMIT on the primary ``engine`` got no answer: read the primary."""


class EngineVariants:
    """The engines of one app (or of a Database without apps): an engine, its cached
    variants for read-only units and isolation levels, its read replicas and its timeouts.

    One record, made whole by its one owner (the Database, or the framework layer for an
    app) when it creates the engine: nothing assigns its replicas or timeouts later.
    Variants share the engine's pool. Their options say how each transaction begins
    (READ ONLY, an isolation level, SQLite's write lock); they leave nothing on the
    connection to reset when it goes back to the pool.
    """

    __slots__ = (
        "engine",
        "is_sqlite",
        "is_memory",
        "wal",
        "aborts_on_error",
        "replicas",
        "timeouts",
        "read_write",
        "_variants",
        "_lock",
        "_checkin_listener",
    )

    def __init__(
        self,
        engine: sa.Engine,
        *,
        replicas: ReadRouting | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        """True for SQLite, which has a single writer and no server connection."""
        self.is_memory = self.is_sqlite and _is_memory(engine)
        """True for an in-memory SQLite database: one connection per thread."""
        self.wal = engine in _WAL_ENGINES
        """True for a SQLite database in WAL mode: a reader never blocks the writer."""
        self.aborts_on_error = engine.dialect.name == "postgresql"
        """True when a failed statement aborts the whole transaction (PostgreSQL)."""
        self.replicas = replicas
        """Read replicas of this primary, for read-only outermost units."""
        self.timeouts = timeouts
        """Statement and lock timeouts of outermost units on this engine that set none (a
        Flask app's config); None leaves them to the Database's."""
        self._variants: dict[tuple[bool, str | None], sa.Engine] = {}
        self._lock = threading.Lock()
        self._checkin_listener = False
        self.read_write = self._make(read_only=False, isolation_level=None)
        """The engine of a read-write unit at the default isolation level: ``for_unit``'s
        answer for the most common unit, which callers may read without the call."""

    def for_unit(self, *, read_only: bool, isolation_level: str | None) -> sa.Engine:
        """The engine a unit with these options binds its session to."""
        if not read_only and isolation_level is None:
            return self.read_write
        key = (read_only, isolation_level)
        variant = self._variants.get(key)
        if variant is None:
            with self._lock:
                variant = self._variants.get(key)
                if variant is None:
                    variant = self._make(read_only=read_only, isolation_level=isolation_level)
                    self._variants[key] = variant
        return variant

    def _make(self, *, read_only: bool, isolation_level: str | None) -> sa.Engine:
        options: dict[str, Any] = {}
        if read_only:
            options[READ_ONLY_OPTION] = True
        elif self.is_sqlite:
            options[WRITE_LOCK_OPTION] = True
        if isolation_level is not None:
            if self.is_sqlite:
                options["isolation_level"] = isolation_level  # a local PRAGMA, no round trip
            else:
                options[ISOLATION_LEVEL_OPTION] = isolation_level
        if not options:
            return self.engine
        variant = self.engine.execution_options(**options)
        # Listeners go on the variant: they run only for its connections, so the default
        # read-write path on PostgreSQL and MariaDB runs on the stock engine, with no
        # per-statement event dispatch. psycopg variants need none: their connections
        # set the modes themselves (see _PsycopgModesConnection).
        name = self.engine.dialect.name
        if name == "postgresql" and self.engine.dialect.driver == "psycopg":
            variant._connection_cls = (
                _PsycopgReadOnlyConnection if read_only else _PsycopgModesConnection
            )
            if not self._checkin_listener:
                event.listen(self.engine, "checkin", _psycopg_on_checkin)  # pool-wide
                self._checkin_listener = True
        elif name in ("postgresql", "mysql", "mariadb"):
            event.listen(variant, "begin", _set_transaction)
        return variant
