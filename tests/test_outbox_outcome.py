"""After ``CommitOutcomeUnknown``, the outbox rows tell whether the unit committed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from flask_uow import CommitOutcomeUnknown, Database

from .outbox_support import drop_database, make_database, thing


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


def _lost_connection_error(backend_name: str) -> Exception:
    """The driver error of a connection that died while COMMIT was on its way."""
    if backend_name == "sqlite":
        import sqlite3

        return sqlite3.ProgrammingError("Cannot operate on a closed database.")
    if backend_name == "postgresql":
        import psycopg

        return psycopg.OperationalError(
            "consuming input failed: server closed the connection unexpectedly"
        )
    import pymysql  # type: ignore[import-untyped]

    lost: Exception = pymysql.err.OperationalError(
        2013, "Lost connection to MySQL server during query"
    )
    return lost


@contextmanager
def answer_lost(db: Database, backend_name: str, *, after_commit: bool) -> Iterator[None]:
    """Lose the connection during COMMIT: after the server committed, or before it could."""
    dialect = db.engine.dialect
    original = dialect.do_commit

    def commit_then_lose(dbapi_connection: Any) -> None:
        if after_commit:
            original(dbapi_connection)
        raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
        raw.close()  # before COMMIT: the server rolls the transaction back
        raise _lost_connection_error(backend_name)

    dialect.do_commit = commit_then_lose  # type: ignore[method-assign]
    try:
        yield
    finally:
        dialect.do_commit = original  # type: ignore[method-assign]


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_was_committed_answers_for_a_unit_whose_commit_outcome_was_unknown(
    odb: Database, backend_name: str, committed: bool
) -> None:
    with answer_lost(odb, backend_name, after_commit=committed):
        with pytest.raises(CommitOutcomeUnknown) as raised:
            with odb.unit_of_work() as uow:
                odb.session.execute(sa.insert(thing).values(name="transfer"))
                message_id = odb.enqueue("transfer.completed", 1)
                session_info = uow.session.info
    ids = getattr(raised.value, "message_ids", None) or session_info["flask_uow_outbox_ids"]
    assert list(ids) == [message_id]
    assert odb.outbox.was_committed(message_id) is committed
    with odb.engine.connect() as connection:
        names = list(connection.scalars(sa.select(thing.c.name)))
    assert names == (["transfer"] if committed else [])
