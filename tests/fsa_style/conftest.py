"""Fixtures as a Flask-SQLAlchemy suite has them: an app per test with fresh tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .blog import create_app, db


@pytest.fixture
def app(backend_url: str) -> Iterator[Flask]:
    app = create_app({"UOW_DATABASE_URL": backend_url, "PROPAGATE_EXCEPTIONS": False})
    with app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        db.drop_all()
        db.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
