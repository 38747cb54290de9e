"""WAL positions of a PostgreSQL primary, causal tokens, and telling whether a transaction wrote.

A position is what a replica must have replayed for a read to see a write. The primary's
connections are watched (``forget_write`` at BEGIN, ``note_write`` before each statement)
so that a COMMIT after a write, and only such a COMMIT, costs a position read.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Position = int
"""A PostgreSQL WAL position (LSN) as an integer: bigger is later."""

UNKNOWN_POSITION: Position = 2**64 - 1
"""Recorded when a write committed but its position could not be read: read the primary."""


_TOKEN_PREFIX = "lsn:"
_WROTE = "flask_uow_wrote"
"""Key in a primary connection's ``info``: its current transaction sent a write."""

_READ_PREFIXES = ("SELECT", "SHOW", "VALUES", "TABLE", "EXPLAIN")


_POSITION_SQL = "SELECT pg_current_wal_insert_lsn()::text"


def parse_lsn(text: str) -> Position:
    """``'16/B374D848'`` -> an integer position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(position: Position) -> str:
    """An integer position -> ``'16/B374D848'``, as PostgreSQL spells it."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def make_token(position: Position | None) -> str:
    """The opaque causal token for ``position`` (None: no write to wait for)."""
    return _TOKEN_PREFIX + format_lsn(position or 0)


def parse_token(token: str | None) -> Position | None:
    """The position in a token from ``make_token``; None or ``''`` mean none."""
    if not token:
        return None
    if not token.startswith(_TOKEN_PREFIX):
        raise ValueError(
            f"{token!r} is not a causal token; pass the string that db.causal_token() returned."
        )
    try:
        position = parse_lsn(token[len(_TOKEN_PREFIX) :])
    except ValueError:
        raise ValueError(
            f"{token!r} is not a causal token; pass the string that db.causal_token() returned."
        ) from None
    return position or None


def read_position(engine: sa.Engine) -> Position:
    """The primary's current WAL insert position, on a pooled connection in autocommit.

    Every transaction that committed, or whose COMMIT is on its way, is at or before it.
    """
    with engine.connect() as connection:
        text = connection.execution_options(isolation_level="AUTOCOMMIT").scalar(
            sa.text(_POSITION_SQL)
        )
    return parse_lsn(str(text))


def forget_write(connection: Connection) -> None:
    """At BEGIN on the primary: the new transaction has written nothing yet."""
    connection.info.pop(_WROTE, None)


def note_write(
    connection: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """Before a statement on the primary: remember whether it writes."""
    info = connection.info
    if _WROTE in info:
        return
    if context is not None and not context.is_text:  # a compiled Core or ORM statement
        wrote = context.isinsert or context.isupdate or context.isdelete or context.isddl
    else:  # sa.text() or exec_driver_sql(): only the SQL says what it does
        wrote = not statement.lstrip()[:7].upper().startswith(_READ_PREFIXES)
    if wrote:
        info[_WROTE] = True


def took_write(connection: Connection) -> bool:
    """At COMMIT on the primary: whether the transaction wrote (and forget it)."""
    return bool(connection.info.pop(_WROTE, False))
