"""Holding a transaction's messages in its session, and writing them in one INSERT at COMMIT.

``enqueue`` adds a message to its session's ``info``, tagged with the SAVEPOINT it was
enqueued in. Nothing is sent then. When a SAVEPOINT is released its messages move to the
enclosing one; when it rolls back they are dropped. When the outermost transaction commits,
SQLAlchemy's ``before_commit`` event writes what is left with one INSERT (plus one
upsert per message key; on PostgreSQL the INSERT also sends ``pg_notify`` to wake relays)
on the transaction's own connection, and ``after_commit`` hands the messages to the
immediate lane. A transaction that enqueued nothing sends nothing, and costs nothing: the
listeners are given to a session at its first ``enqueue``, to that session only (see
``Writer.attach``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ._message import Message
from ._tables import OutboxTables
from ._wake import notifying

IDS_KEY = "flask_uow_outbox_ids"
"""``session.info`` key: the ids of the messages the session's transaction holds (a list).

``CommitOutcomeUnknown.message_ids`` reads it; ``was_committed`` answers for them.
"""
_PENDING_KEY = "flask_uow_outbox_pending"
_COMMITTED_KEY = "flask_uow_outbox_committed"
_ATTACHED_KEY = "flask_uow_outbox_attached"


@dataclasses.dataclass
class Pending:
    """A message enqueued in a transaction, not written yet."""

    savepoint: SessionTransaction | None
    message: Message
    available_at: float


def hold(session: Session, message: Message, available_at: float, writer: Writer) -> None:
    """Keep ``message`` in ``session`` until its transaction commits (no SQL is sent);
    ``writer`` listens to that session from the first message of its transaction on."""
    info = session.info
    if _ATTACHED_KEY not in info:
        info[_ATTACHED_KEY] = True
        writer.attach(session)
    pending: list[Pending] | None = info.get(_PENDING_KEY)
    if pending is None:
        pending = info[_PENDING_KEY] = []
        info[IDS_KEY] = []
    pending.append(Pending(session.get_nested_transaction(), message, available_at))
    info[IDS_KEY].append(message.id)


def take_committed(session: Session) -> list[Message]:
    """The messages the session's last COMMIT wrote, once (then forgotten)."""
    committed: list[Message] = session.info.pop(_COMMITTED_KEY, [])
    return committed


class Writer:
    """The session event listeners that write one Database's messages at COMMIT."""

    def __init__(
        self,
        tables: OutboxTables,
        lease_for: Callable[[Message], float | None],
    ) -> None:
        self.tables = tables
        self.lease_for = lease_for
        """The lease a message is written with: the immediate lane publishes leased rows,
        which relays leave alone until the lease expires (a crash after COMMIT)."""
        outbox = tables.outbox
        self._insert = sa.insert(outbox).values(
            {
                column.name: sa.bindparam(column.name, type_=column.type)
                for column in outbox.columns
                if column.name != "seq"
            }
        )
        self._insert_notifying = notifying(self._insert)
        self._classes: dict[type[Session], type[Session]] = {}
        """Each session class, and its subclass carrying the listeners."""
        self._lock = threading.Lock()

    def attach(self, session: Session) -> None:
        """Make ``session`` (and no other session) run this writer's listeners.

        Called at the first ``enqueue`` in a session: sessions that enqueue nothing have no
        outbox listener at all, so their units cost what they cost without the outbox. The
        session's class becomes a subclass of its own class that carries the listeners
        (class-level listeners cost one call per event; instance-level ones would slow
        every event of the session), and SQLAlchemy's per-instance copy of the old class's
        event dispatcher is dropped so that the new class's is used from now on.
        """
        base = type(session)
        writing = self._classes.get(base)
        if writing is None:
            writing = self._writing_class(base)
        session.__class__ = writing
        session.__dict__.pop("dispatch", None)

    def _writing_class(self, base: type[Session]) -> type[Session]:
        with self._lock:
            writing = self._classes.get(base)
            if writing is None:
                writing = type(base.__name__, (base,), {"__module__": base.__module__})
                event.listen(writing, "before_commit", self._before_commit)
                event.listen(writing, "after_commit", self._after_commit)
                event.listen(writing, "after_transaction_end", self._after_transaction_end)
                self._classes[base] = writing
            return writing

    def _before_commit(self, session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return  # a RELEASE SAVEPOINT: the messages wait for the outermost COMMIT
        pending: list[Pending] | None = session.info.get(_PENDING_KEY)
        if not pending:
            return
        connection = session.connection()
        rows = self._rows(connection, [item for item in pending])
        # Rows no process publishes right away wake the relays (PostgreSQL: NOTIFY at COMMIT).
        notify = connection.dialect.name == "postgresql" and any(
            row["leased_until"] is None for row in rows
        )
        # One statement, compiled once per process: executemany with several rows (PyMySQL
        # rewrites it into one multi-row INSERT, psycopg pipelines it in one round trip).
        # One row goes as a plain execute: psycopg's executemany costs more round trips.
        connection.execute(
            self._insert_notifying if notify else self._insert, rows[0] if len(rows) == 1 else rows
        )

    def _after_commit(self, session: Session) -> None:
        info = session.info
        nested = session.get_nested_transaction()
        pending: list[Pending] | None = info.get(_PENDING_KEY)
        if not pending:
            return
        if nested is not None:  # released: its messages now belong to the enclosing one
            enclosing = nested.parent
            parent = enclosing if enclosing is not None and enclosing.nested else None
            for item in pending:
                if item.savepoint is nested:
                    item.savepoint = parent
            return
        info[_COMMITTED_KEY] = [item.message for item in pending]
        del info[_PENDING_KEY]

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        info = session.info
        pending: list[Pending] | None = info.get(_PENDING_KEY)
        if not pending:
            return
        if transaction.nested:  # rolled back (a released one was retagged in after_commit)
            kept = [item for item in pending if item.savepoint is not transaction]
            if len(kept) != len(pending):
                info[_PENDING_KEY] = kept
                info[IDS_KEY] = [item.message.id for item in kept]
        elif transaction.parent is None:  # the outermost transaction rolled back
            del info[_PENDING_KEY]

    def _rows(self, connection: sa.Connection, pending: list[Pending]) -> list[dict[str, Any]]:
        now = time.time()
        sequences = self._key_sequences(connection, pending)
        rows = []
        for item in pending:
            message = item.message
            lease = self.lease_for(message)
            key_seq = None
            if message.key is not None:
                key_seq = sequences[message.key]
                sequences[message.key] += 1
            rows.append(
                {
                    "id": message.id,
                    "task": message.task,
                    "args": message.args,
                    "kwargs": message.kwargs,
                    "key": message.key,
                    "key_seq": key_seq,
                    "queue": message.queue,
                    "countdown": message.countdown,
                    "headers": message.headers,
                    "created_at": now,
                    "available_at": item.available_at,
                    "leased_until": None if lease is None else now + lease,
                    "attempts": 0,
                    "last_error": None,
                    "parked": False,
                    "published_at": None,
                }
            )
        return rows

    def _key_sequences(self, connection: sa.Connection, pending: list[Pending]) -> dict[str, int]:
        """The first sequence number of each key's messages, taken in key order.

        The upsert locks the key's row until COMMIT: a second writer of the same key waits
        for this transaction to end, so sequence numbers follow commit order. Keys are taken
        in sorted order, so two units that share several keys cannot deadlock on them.
        """
        counts: dict[str, int] = {}
        for item in pending:
            if item.message.key is not None:
                counts[item.message.key] = counts.get(item.message.key, 0) + 1
        return {
            key: take_sequence(connection, self.tables, key, counts[key]) for key in sorted(counts)
        }


def take_sequence(connection: sa.Connection, tables: OutboxTables, key: str, count: int) -> int:
    """Reserve ``count`` numbers of ``key``'s sequence; return the first one."""
    keys = tables.keys
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        module: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql as module
        else:
            from sqlalchemy.dialects import sqlite as module
        statement = (
            module.insert(keys)
            .values(key=key, last_seq=count)
            .on_conflict_do_update(
                index_elements=[keys.c.key], set_={"last_seq": keys.c.last_seq + count}
            )
            .returning(keys.c.last_seq)
        )
        last = connection.execute(statement).scalar_one()
    else:
        from sqlalchemy.dialects import mysql

        upsert = mysql.insert(keys).values(key=key, last_seq=count)
        connection.execute(upsert.on_duplicate_key_update(last_seq=keys.c.last_seq + count))
        last = connection.execute(sa.select(keys.c.last_seq).where(keys.c.key == key)).scalar_one()
    return int(last) - count + 1
