"""Fixtures for the ledger's tests: an app on each backend (``backend_url`` comes from the
repository's root ``conftest.py``), with fresh tables, and clients for its HTTP API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.pool import QueuePool

from ledger.app import create_app
from ledger.database import db
from ledger.notifications import outbox
from ledger.testing import LedgerClient


@pytest.fixture
def app(backend_url: str) -> Iterator[Flask]:
    """The ledger app on the backend under test, with all tables created and dropped after."""
    app = create_app({"UOW_DATABASE_URL": backend_url, "TESTING": True})
    with app.app_context():
        db.drop_all()
        db.create_all()
    outbox.clear()
    yield app
    outbox.clear()
    with app.app_context():
        pool = db.engine.pool
        if isinstance(pool, QueuePool):
            assert pool.checkedout() == 0, "a test left a connection checked out"
        db.drop_all()
        db.dispose()


@pytest.fixture
def api(app: Flask) -> LedgerClient:
    """The HTTP API through Flask's test client."""
    return LedgerClient(app.test_client())
