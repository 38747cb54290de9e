"""The outbox, key and inbox tables, defined on a Database's MetaData."""

from __future__ import annotations

import sqlalchemy as sa

OUTBOX_TABLE = "flask_uow_outbox"
KEYS_TABLE = "flask_uow_outbox_keys"
INBOX_TABLE = "flask_uow_inbox"

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Autoincrementing: SQLite only counts on an INTEGER PRIMARY KEY."""


class OutboxTables:
    """The three tables of the outbox, added to one MetaData (so ``create_all`` and Alembic
    see them).

    - ``flask_uow_outbox``: one row per message, written in the unit's own transaction.
      ``seq`` orders unkeyed messages; ``key_seq`` orders the messages of one key in the
      order their units committed (see ``flask_uow_outbox_keys``). A row is pending while
      ``published_at`` is NULL; ``leased_until`` hides it from other relays while one
      publishes it; ``parked`` takes it out of delivery after too many failures.
    - ``flask_uow_outbox_keys``: one row per key, the last ``key_seq`` handed out. A unit
      that enqueues a keyed message updates this row, which locks it until COMMIT: writers
      of one key commit one after the other, so their sequence numbers are in commit order.
    - ``flask_uow_inbox``: the ids of the messages a ``UnitTask`` consumer has processed,
      written in the consumer's own unit, so that a redelivered message has its effect once.
    """

    def __init__(self, metadata: sa.MetaData) -> None:
        existing = metadata.tables.get(OUTBOX_TABLE)
        if existing is not None:
            self.outbox = existing
            self.keys = metadata.tables[KEYS_TABLE]
            self.inbox = metadata.tables[INBOX_TABLE]
            return
        self.outbox = sa.Table(
            OUTBOX_TABLE,
            metadata,
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(36), nullable=False, unique=True),
            sa.Column("task", sa.String(255), nullable=False),
            sa.Column("args", sa.JSON, nullable=False),
            sa.Column("kwargs", sa.JSON, nullable=False),
            sa.Column("key", sa.String(255), nullable=True),
            sa.Column("key_seq", sa.BigInteger, nullable=True),
            sa.Column("queue", sa.String(255), nullable=True),
            sa.Column("countdown", sa.Double, nullable=True),
            sa.Column("headers", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("available_at", sa.Double, nullable=False),
            sa.Column("leased_until", sa.Double, nullable=True),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("last_error", sa.String(1000), nullable=True),
            sa.Column("parked", sa.Boolean, nullable=False, default=False),
            sa.Column("published_at", sa.Double, nullable=True),
            sa.Index("flask_uow_outbox_pending", "published_at", "parked", "available_at"),
            sa.Index("flask_uow_outbox_key_order", "key", "key_seq"),
        )
        self.keys = sa.Table(
            KEYS_TABLE,
            metadata,
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("last_seq", sa.BigInteger, nullable=False),
        )
        self.inbox = sa.Table(
            INBOX_TABLE,
            metadata,
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("task", sa.String(255), nullable=False),
            sa.Column("processed_at", sa.Double, nullable=False),
        )
