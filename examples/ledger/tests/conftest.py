"""Fixtures for the ledger's tests: an app on each backend (``backend_url`` comes from the
repository's root ``conftest.py``) and clients for its HTTP API.

Tests run inside ``flask_uow.testing.isolated()`` through the flask-uow pytest plugin (loaded
by its ``pytest11`` entry point): the plugin creates the tables once per database and
session, every unit a test runs commits to a savepoint, and all of it is rolled back when
the test ends. Tests whose units run in several threads use ``threaded_app`` instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.pool import QueuePool

from flask_uow import Database
from flask_uow.testing import scratch_database
from ledger.app import create_app
from ledger.database import db
from ledger.services.notifications import outbox
from ledger.testing import LedgerClient, wait_for_deliveries


@pytest.fixture(scope="session")
def _ledger_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file for the whole session, as the servers have one database each."""
    return tmp_path_factory.mktemp("ledger") / "ledger.db"


@pytest.fixture
def ledger_url(backend_url: str, backend_name: str, _ledger_sqlite_file: Path) -> str:
    """The database the ledger's tests share on the backend under test.

    ``backend_url`` is this session's scratch database on a server, but a new file per test
    on SQLite; the ledger uses one file per session instead, so that its tables are created
    once and SQLite tests rely on the isolation exactly as the servers' tests do.
    """
    return f"sqlite:///{_ledger_sqlite_file}" if backend_name == "sqlite" else backend_url


def _close(app: Flask) -> None:
    """Wait for the outbox's in-process deliveries, check that the test gave back every
    connection, and close them all; ``dispose`` also ends the outbox's thread, which the
    next test's first delivery starts again (``db`` is shared by every test's app)."""
    wait_for_deliveries(app)
    with app.app_context():
        pool = db.engine.pool
        if isinstance(pool, QueuePool):
            assert pool.checkedout() == 0, "a test left a connection checked out"
    db.dispose()


@pytest.fixture
def uow_app(ledger_url: str) -> Iterator[Flask]:
    """The ledger app on the backend under test, for the flask-uow plugin: it creates the
    tables once per database and session, and drops them at the end."""
    app = create_app({"UOW_DATABASE_URL": ledger_url, "TESTING": True})
    outbox.clear()
    yield app
    outbox.clear()
    _close(app)


@pytest.fixture
def app(uow_app: Flask, isolated_db: Database) -> Flask:
    """The ledger app, with the test inside its app context; everything the test commits is
    rolled back after it (``flask_uow.testing.isolated``), so tables are empty at the start."""
    return uow_app


@pytest.fixture
def threaded_app(backend_url: str) -> Iterator[Flask]:
    """For tests whose units run in several threads, which cannot share the isolation: the
    ledger app on a scratch database of its own, with real commits, dropped after the test."""
    name = f"ledger_threads_{secrets.token_hex(4)}"
    with scratch_database(backend_url, name) as url:
        config = {"UOW_DATABASE_URL": url.render_as_string(hide_password=False), "TESTING": True}
        app = create_app(config)
        with app.app_context():
            db.create_all()
        outbox.clear()
        yield app
        outbox.clear()
        _close(app)


@pytest.fixture
def api(app: Flask) -> LedgerClient:
    """The HTTP API through Flask's test client."""
    return LedgerClient(app.test_client())
