"""Fixtures for the library's tests: a Database on each backend, and ways to look behind it."""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_uow import Database

from .models import Base, Item

FLASK_INSTALLED = importlib.util.find_spec("flask") is not None


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """In the Flask-less run (make pytest-no-flask), leave out modules that import Flask."""
    if FLASK_INSTALLED:
        return None
    if collection_path.is_dir():
        collection_path = collection_path / "conftest.py"
    if collection_path.suffix != ".py" or not collection_path.exists():
        return None
    tree = ast.parse(collection_path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FLASKS:
            return True
        if isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] in FLASKS for alias in node.names
        ):
            return True
    return None


FLASKS = frozenset({"flask", "werkzeug", "factory"})
"""Top-level packages that the Flask-less virtualenv lacks."""


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    """A Database on the backend under test, with fresh tables, disposed afterwards."""
    database = Database(backend_url, metadata=Base.metadata)
    database.drop_all()
    database.create_all()
    yield database
    assert checked_out(database) == 0, "a test left a connection checked out"
    database.drop_all()
    database.dispose()


@pytest.fixture
def observer(backend_url: str) -> Iterator[sa.Engine]:
    """A separate engine for reading what was really committed."""
    engine = sa.create_engine(backend_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def committed_names(observer: sa.Engine) -> list[str]:
    """Names of the items committed to the database, sorted, seen from another connection."""
    with observer.connect() as connection:
        return sorted(connection.scalars(sa.select(Item.name)))


def checked_out(db: Database) -> int:
    """Connections of ``db.engine``'s pool that are checked out right now."""
    pool = db.engine.pool
    assert isinstance(pool, sa.pool.QueuePool), f"expected a QueuePool, got {pool!r}"
    return pool.checkedout()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio: SQLAlchemy's AsyncSession needs it."""
    return "asyncio"


@pytest.fixture
async def adb(db: Database) -> AsyncIterator[Database]:
    """``db`` for async units: its async engine is disposed (on the test's loop) afterwards."""
    yield db
    assert async_checked_out(db) == 0, "a test left an async connection checked out"
    await db.dispose_async()


def async_checked_out(db: Database) -> int:
    """Connections of ``db.async_engine``'s pool that are checked out right now."""
    pool = db.async_engine.sync_engine.pool
    assert isinstance(pool, sa.pool.QueuePool), f"expected a QueuePool, got {pool!r}"
    return pool.checkedout()
