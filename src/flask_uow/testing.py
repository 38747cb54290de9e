"""Test helpers: run a test's units of work inside one transaction that is always undone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from threading import get_ident

from sqlalchemy.engine import Connection

from ._database import Database, Isolation
from ._errors import UnitOfWorkError

__all__ = ["isolated"]


@contextmanager
def isolated(db: Database) -> Iterator[Connection]:
    """Run every unit of work of this thread on one connection, and undo it all at exit.

    Entering checks out one connection from ``db.engine`` (the current Flask app's, inside
    an app context) and BEGINs an outer transaction. Inside, each outermost unit runs in a
    SAVEPOINT of it: the unit's COMMIT releases the savepoint and runs its ``on_commit``
    hooks, its ROLLBACK rolls back to the savepoint, so code under test behaves as in
    production. Leaving rolls the outer transaction back: the database is exactly as before.

    Differences from production, by design:

    - ``Propagation.REQUIRES_NEW`` becomes a savepoint on the same connection, so its work
      is undone with everything else and is visible to the unit that opened it.
    - ``read_only`` units still refuse flushes, but the server-side READ ONLY transaction
      and ``isolation_level`` are not applied (they cannot change inside a transaction).
    - Units in other threads cannot share the connection and raise ``UnitOfWorkError``.

    Yields the connection, for assertions in raw SQL.
    """
    if db._isolation.get() is not None:
        raise UnitOfWorkError("isolated() is already active for this Database in this thread.")
    if db.current is not None:
        raise UnitOfWorkError(
            "isolated() must be entered outside any unit of work, so that every unit of the "
            "test runs inside it."
        )
    connection = db.engine.connect()
    outer = connection.begin()
    token = db._isolation.set(Isolation(connection, get_ident()))
    try:
        yield connection
    finally:
        db._isolation.reset(token)
        try:
            if outer.is_active:
                outer.rollback()
        finally:
            connection.close()
        leaked = db.current
        if leaked is not None:
            raise UnitOfWorkError(
                f"A unit of work opened at {leaked.opened_at or 'an unknown place'} was still "
                "active when isolated() ended; end every unit inside the isolated block."
            )
