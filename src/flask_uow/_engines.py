"""Engines prepared for units of work: per-dialect setup and per-unit option variants."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import ConnectionPoolEntry

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
    sqlite_foreign_keys: bool = True,
    sqlite_wal: bool = True,
    asynchronous: bool = False,
) -> sa.Engine:
    """Create an engine from ``url`` and ``options`` and prepare it for units of work.

    With ``asynchronous``, ``url`` names an async driver and the engine returned is the
    sync face (``sync_engine``) of an ``AsyncEngine``: listeners and variants work on it.

    SQLite gets foreign keys (unless ``sqlite_foreign_keys`` is False, for legacy schemas),
    a busy timeout, working SAVEPOINTs and, for a database file, WAL journaling with
    ``synchronous=NORMAL`` (unless ``sqlite_wal`` is False) so that readers never wait for
    the writer; every dialect gets READ ONLY transactions for read-only units.
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
    wal = sqlite_wal and url.get_backend_name() == "sqlite" and not _is_memory(url)
    _prepare(engine, sqlite_foreign_keys=sqlite_foreign_keys, sqlite_wal=wal)
    if wal:
        _WAL_ENGINES.add(engine)
    return engine


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def _prepare(engine: sa.Engine, *, sqlite_foreign_keys: bool, sqlite_wal: bool) -> None:
    name = engine.dialect.name
    if name == "sqlite":
        pragmas = []
        if sqlite_foreign_keys:
            pragmas.append("PRAGMA foreign_keys = ON")
        if sqlite_wal:
            pragmas += ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"]

        def on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            _sqlite_on_connect(dbapi_connection, pragmas)

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    elif name in ("mysql", "mariadb"):
        event.listen(engine, "begin", _mysql_on_begin)
    elif name == "postgresql":
        if engine.dialect.driver == "psycopg":
            event.listen(engine, "begin", _psycopg_on_begin)
            event.listen(engine, "checkin", _psycopg_on_checkin)
        else:
            event.listen(engine, "begin", _postgresql_on_begin)


def _sqlite_on_connect(dbapi_connection: Any, pragmas: list[str]) -> None:
    # pysqlite starts transactions late and behind SQLAlchemy's back, which breaks
    # SAVEPOINT; take over: no implicit BEGIN, ours is emitted in _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in pragmas:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # An isolation level set on a connection makes pysqlite manage transactions again;
    # keep it out of the way before emitting our own BEGIN.
    # (Only when set: through aiosqlite, setting it is a trip to the driver's thread.)
    dbapi_connection: Any = connection.connection.dbapi_connection
    if dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None
    # A read-write unit takes the write lock up front, so two writers queue on the busy
    # timeout instead of deadlocking when both try to upgrade a shared lock. Everything
    # else (read-only units, plain engine connections) begins deferred.
    if connection.get_execution_options().get(WRITE_LOCK_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def _transaction_modes(connection: Connection) -> list[str]:
    options = connection.get_execution_options()
    modes = []
    level = options.get(ISOLATION_LEVEL_OPTION)
    if level:
        modes.append(f"ISOLATION LEVEL {level}")
    if options.get(READ_ONLY_OPTION):
        modes.append("READ ONLY")
    return modes


def _mysql_on_begin(connection: Connection) -> None:
    # SET TRANSACTION without SESSION applies to the next transaction only, which the
    # unit's first statement starts; nothing needs resetting when the connection goes back.
    modes = _transaction_modes(connection)
    if modes:
        connection.exec_driver_sql("SET TRANSACTION " + ", ".join(modes))


def _postgresql_on_begin(connection: Connection) -> None:
    # The driver sends BEGIN with this, the first statement of the transaction.
    modes = _transaction_modes(connection)
    if modes:
        connection.exec_driver_sql("SET TRANSACTION " + ", ".join(modes))


def _psycopg_on_begin(connection: Connection) -> None:
    # psycopg 3 puts READ ONLY and the isolation level into the BEGIN it sends with the
    # first statement: no extra round trip. Only what a unit changed is put back, so an
    # engine-wide isolation_level keeps working. If the driver refuses (its connection is
    # broken), fall back to SQL, which SQLAlchemy reports as a lost connection.
    options = connection.get_execution_options()
    read_only = bool(options.get(READ_ONLY_OPTION))
    level = options.get(ISOLATION_LEVEL_OPTION)
    fairy = connection.connection
    info = fairy.info
    if not read_only and level is None and _CHANGED not in info:
        return
    # Read settings from psycopg's own connection; change them through the DBAPI
    # connection's set_*() methods, which SQLAlchemy's async adapter awaits.
    driver_connection: Any = fairy.driver_connection
    setter: Any = fairy.dbapi_connection
    try:
        changed = info.setdefault(_CHANGED, {})
        if read_only or "read_only" in changed:
            changed.setdefault("read_only", driver_connection.read_only)
            setter.set_read_only(True if read_only else changed.pop("read_only"))
        if level is not None or "isolation_level" in changed:
            changed.setdefault("isolation_level", driver_connection.isolation_level)
            setter.set_isolation_level(
                _PSYCOPG_LEVELS[level] if level is not None else changed.pop("isolation_level")
            )
        if not changed:
            del info[_CHANGED]
    except Exception:
        info.pop(_CHANGED, None)
        _postgresql_on_begin(connection)


def _psycopg_on_checkin(driver_connection: Any, record: ConnectionPoolEntry) -> None:
    # Back in the pool: give the connection its own settings again, for whoever checks it
    # out next without a unit (a raw DBAPI connection, say).
    changed = record.info.pop(_CHANGED, None)
    if not changed or driver_connection is None:
        return
    try:
        for attribute, value in changed.items():
            getattr(driver_connection, f"set_{attribute}")(value)
    except Exception:
        record.invalidate()  # cannot be trusted with a unit's settings left on it


_WAL_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
"""SQLite engines whose connections journal in WAL mode."""

_CHANGED = "flask_uow_changed"
"""Key in a pooled connection's ``info``: driver attributes a unit changed, with old values."""

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


class EngineVariants:
    """An engine and its cached variants for read-only units and isolation levels.

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
        "_read_write",
        "_variants",
        "_lock",
    )

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        """True for SQLite, which has a single writer and no server connection."""
        self.is_memory = self.is_sqlite and _is_memory(engine.url)
        """True for an in-memory SQLite database: one connection per thread."""
        self.wal = engine in _WAL_ENGINES
        """True for a SQLite database in WAL mode: a reader never blocks the writer."""
        self.aborts_on_error = engine.dialect.name == "postgresql"
        """True when a failed statement aborts the whole transaction (PostgreSQL)."""
        self._variants: dict[tuple[bool, str | None], sa.Engine] = {}
        self._lock = threading.Lock()
        self._read_write = self._make(read_only=False, isolation_level=None)

    def for_unit(self, *, read_only: bool, isolation_level: str | None) -> sa.Engine:
        """The engine a unit with these options binds its session to."""
        if not read_only and isolation_level is None:
            return self._read_write
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
        return self.engine.execution_options(**options) if options else self.engine
