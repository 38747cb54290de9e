"""Connection poolers in front of PostgreSQL (PgBouncer): detect one, keep prepared statements safe.

In transaction pooling mode, each transaction may run on a different server connection.
flask-uow sets READ ONLY and isolation levels per transaction, so nothing it does outlives
a transaction. Prepared statements are the exception: psycopg prepares a statement on the
server after ``prepare_threshold`` (5) executions, and PgBouncer before 1.21 (Debian 12
ships 1.18) cannot follow it to the next server connection ("prepared statement
"_pg3_0" does not exist"). Policy: a psycopg connection that finds itself behind a pooler
stops preparing statements (``prepare_threshold = None``); direct connections keep them.
Finding out costs one round trip per new physical connection, none per unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry

BEHIND_POOLER = "flask_uow_behind_pooler"
"""Key in a pooled connection's ``info``: True when a pooler stands between it and the server."""


def guard_prepared_statements(engine: sa.Engine) -> None:
    """Make ``engine``'s psycopg connections stop preparing statements behind a pooler.

    Other drivers are left alone (psycopg2 and asyncpg-free setups never prepare by
    themselves). Idempotent.
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return
    if not event.contains(engine, "connect", _on_connect):
        event.listen(engine, "connect", _on_connect)


def behind_pooler(dbapi_connection: Any) -> bool:
    """True when the backend answering queries is not the one that accepted the connection.

    A PostgreSQL server tells the client its backend's process id at startup, and
    ``pg_backend_pid()`` returns the same number. A pooler answers the startup itself with
    made-up key data, so the two differ. Costs one round trip, in autocommit.
    """
    driver = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
    told = driver.info.backend_pid
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT pg_backend_pid()")
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = autocommit
    return bool(row is None or row[0] != told)


def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    pooled = behind_pooler(dbapi_connection)
    record.info[BEHIND_POOLER] = pooled
    if pooled:
        # An async engine hands over SQLAlchemy's adapter: the setting is the driver's.
        driver = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
        driver.prepare_threshold = None


@dataclass(frozen=True, slots=True)
class PoolerReport:
    """What ``pooler_report`` found on one connection."""

    behind_pooler: bool
    version: str | None
    """``SHOW VERSION`` from PgBouncer's admin console, when this user may ask it."""
    prepares: bool
    """Whether this connection still prepares statements on the server."""

    def lines(self) -> list[str]:
        if not self.behind_pooler:
            return ["pooler: none (connected straight to PostgreSQL)"]
        name = self.version or "a connection pooler (PgBouncer's admin console did not answer)"
        lines = [f"pooler: {name} between the app and PostgreSQL"]
        if self.prepares:
            lines.append(
                "pooler: WARNING psycopg prepares statements, which PgBouncer < 1.21 in "
                "transaction mode loses: set connect_args={'prepare_threshold': None} in "
                "UOW_ENGINE_OPTIONS, or max_prepared_statements in pgbouncer.ini (1.21+)"
            )
        else:
            lines.append("pooler: prepared statements off (safe in transaction pooling)")
        return lines


def pooler_report(engine: sa.Engine) -> PoolerReport | None:
    """Look at one connection of ``engine``: is there a pooler, which, do statements prepare?

    None for engines that are not PostgreSQL with psycopg. Raises ``sqlalchemy.exc.DBAPIError``
    when the database cannot be reached.
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    with engine.connect() as connection:
        dbapi_connection: Any = connection.connection.dbapi_connection
        pooled = behind_pooler(dbapi_connection)
        prepares = dbapi_connection.prepare_threshold is not None
    version = _admin_version(engine) if pooled else None
    return PoolerReport(pooled, version, prepares)


def _admin_version(engine: sa.Engine) -> str | None:
    """PgBouncer's ``SHOW VERSION``, asked on its admin console (database ``pgbouncer``)."""
    import psycopg

    url = engine.url
    try:
        with psycopg.connect(
            host=url.host or "",
            port=url.port or 5432,
            user=url.username or "",
            password=url.password or "",
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=2,
            cursor_factory=psycopg.ClientCursor,  # the console speaks the simple protocol only
        ) as console:
            row = console.execute("SHOW VERSION").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None
