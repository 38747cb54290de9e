"""What flask-uow does on a replica's connections: refuse dead ones, bound silent ones.

Listeners installed by ``Replicas`` on each replica engine. A pooled connection the server
closed is refused at checkout without a round trip; a connection waiting for an answer is
armed with a deadline (``_deadlines``) and disarmed when the answer comes.
"""

from __future__ import annotations

import select
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from ._deadlines import DEADLINES

PROBE_ANSWER_SECONDS = 2.0
"""How long a replica may take to answer a probe (a trivial query) before it is marked down."""

ANSWER_WITHIN_OPTION = "flask_uow_answer_within"
"""Execution option: seconds the replica has to answer a statement (the probe's, shorter)."""

_REPLAYED_SQL = "SELECT pg_last_wal_replay_lsn()::text"


def ask(replica_engine: sa.Engine, sql: str) -> tuple[Any, ...]:
    """One row of ``sql`` from the replica, in autocommit, answered within the probe's bound."""
    with replica_engine.connect() as connection:
        answer = connection.execution_options(
            isolation_level="AUTOCOMMIT", **{ANSWER_WITHIN_OPTION: PROBE_ANSWER_SECONDS}
        ).execute(sa.text(sql))
        return tuple(answer.one())


def replayed_on(connection: Connection) -> str | None:
    """How far the server of this replica connection has replayed, as PostgreSQL spells it.

    Sent on a cursor of its own, past the engine's statement listeners, inside the unit's
    transaction (a READ ONLY one is fine).
    """
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_REPLAYED_SQL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


def disarm_statement(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    DEADLINES.disarm(connection.connection.dbapi_connection)


def disarm_checked_in(driver_connection: Any, record: ConnectionPoolEntry) -> None:
    if driver_connection is not None:
        DEADLINES.disarm(driver_connection)


def refuse_dead_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    # An idle connection has nothing to read; if its socket is readable, the server sent a
    # termination notice or closed it. One poll() call, no round trip: the pool then
    # replaces the connection, or fails at checkout if the replica is down.
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return
    try:
        poller = select.poll()
        poller.register(fileno(), select.POLLIN)
        readable = bool(poller.poll(0))
    except Exception:
        readable = True
    if readable:
        raise sa.exc.DisconnectionError("the replica closed this pooled connection")
