"""Fixtures and helpers shared by the outbox tests: a Database with its own MetaData."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from flask_uow import Database
from flask_uow.outbox import Message

metadata = sa.MetaData()
"""The outbox tests' own MetaData (a Database adds the outbox tables to it)."""

thing = sa.Table(
    "outbox_thing",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)


def make_database(url: str) -> Database:
    """A Database with the outbox tables created (dropped first if a run left them)."""
    database = Database(url, metadata=metadata)
    database.drop_all()
    database.create_all()
    return database


def drop_database(database: Database) -> None:
    """End the outbox's threads (``dispose``) so that none meets the dropped tables or runs
    a later test's messages, drop the tables, and close every connection."""
    database.dispose()
    database.drop_all()
    database.dispose()


def stored_tasks(engine: sa.Engine) -> list[str]:
    """Task names of every outbox row, in insertion order, seen from another connection."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT task FROM flask_uow_outbox ORDER BY seq"))
        return [row.task for row in rows]


class Collector:
    """A publish target that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.calls = 0

    def __call__(self, messages: list[Message]) -> None:
        self.calls += 1
        self.messages.extend(messages)

    @property
    def tasks(self) -> list[str]:
        return [message.task for message in self.messages]


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Collect the SQL statements ``engine`` sends while the block runs."""
    sent: list[str] = []

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def require_broker(url: str) -> None:
    """Skip the calling test module when RabbitMQ at ``url`` does not answer, or fail it
    under CI, which starts RabbitMQ (``.ci/run``)."""
    import os

    import pytest
    from kombu.connection import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1)
        return
    except Exception:
        pass
    if os.environ.get("CI") == "true":  # pragma: no cover - CI starts RabbitMQ
        raise RuntimeError(f"RabbitMQ at {url} is unreachable; CI requires it.")
    pytest.skip("RabbitMQ is not reachable", allow_module_level=True)  # pragma: no cover
