"""Apps wired to flask-uow as each extension's own documentation wires Flask-SQLAlchemy.

Flask is imported here, so the Flask-less run (make pytest-no-flask) leaves this folder out.
"""

from __future__ import annotations

from collections.abc import Iterator

import flask
import pytest
import sqlalchemy as sa

SQLITE_AND_POSTGRESQL = pytest.mark.parametrize(
    "backend_url", ["sqlite", "postgresql"], indirect=True
)
"""SQLite, and PostgreSQL, where a failed statement aborts the whole transaction."""
ECOSYSTEM = [pytest.mark.flask, SQLITE_AND_POSTGRESQL]
"""Marks of the modules here: they need Flask, and run on SQLite and PostgreSQL."""


def fresh_tables(url: str, metadata: sa.MetaData) -> None:
    """Create ``metadata``'s tables at ``url``, dropping what is there under those names; the
    test's teardown drops them again (``_drop_tables_afterwards``).

    The apps of several modules share the PostgreSQL scratch database with the rest of the
    suite and have tables of common names ("user"), which other apps' foreign keys may
    reference: CASCADE, and nothing left behind for the next test's ``drop_all()``.
    """
    _drop(url, metadata)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    _created.append((url, metadata))


_created: list[tuple[str, sa.MetaData]] = []


def _drop(url: str, metadata: sa.MetaData) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            quote = connection.dialect.identifier_preparer.quote
            cascade = " CASCADE" if connection.dialect.name == "postgresql" else ""
            for table in reversed(metadata.sorted_tables):
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table.name)}{cascade}")
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def _drop_tables_afterwards() -> Iterator[None]:
    """Drop the tables a test made with ``fresh_tables``, after its own fixtures ended."""
    yield
    while _created:
        _drop(*_created.pop())


assert flask  # imported so that the Flask-less run leaves this folder out
