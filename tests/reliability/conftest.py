"""Fixtures of the reliability suite: the database under test (with a password on servers),
ledger apps on it, and the figures each test records for ``RELIABILITY.md``."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ledger.app import create_app
from ledger.database import db
from ledger.notifications import outbox

from ._faults import admin_engine
from ._scale import FIGURES_ENV, MODE

SERVERS = ["postgresql", "mariadb"]
"""For ``@pytest.mark.parametrize("backend_url", SERVERS, indirect=True)``: servers only."""


@dataclass(frozen=True, slots=True)
class Target:
    """The database a test runs against."""

    backend: str
    """sqlite, postgresql or mariadb."""
    url: str
    """The URL the app uses. On a server it carries ``password``, which must never show."""
    admin_url: str
    """A superuser URL of the same database, for the test's own checks and for faults."""
    database: str
    """The database name (the file path on SQLite)."""
    password: str | None

    def app_url(self, **query: str) -> str:
        """``url`` with extra query parameters (e.g. ``application_name`` on PostgreSQL)."""
        url = sa.make_url(self.url)
        if query:
            url = url.update_query_dict(query)
        return url.render_as_string(hide_password=False)


@pytest.fixture
def target(backend_url: str, backend_name: str) -> Iterator[Target]:
    """The scratch database of ``backend_url``, reached with a password on servers.

    PostgreSQL trusts local connections here, so the superuser URL simply gets a password
    added (sent, and ignored by the server). MariaDB gets a user of its own with a password,
    granted the scratch database and dropped afterwards.
    """
    url = sa.make_url(backend_url)
    if backend_name == "sqlite":
        assert url.database
        yield Target("sqlite", backend_url, backend_url, url.database, None)
        return
    assert url.database
    password = f"s3cr3t-{secrets.token_hex(8)}"
    if backend_name == "postgresql":
        app_url = url.set(password=password)
        yield Target(
            "postgresql",
            app_url.render_as_string(hide_password=False),
            backend_url,
            url.database,
            password,
        )
        return
    user = f"rel_{secrets.token_hex(4)}"
    admin = admin_engine(backend_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        conn.execute(sa.text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
    try:
        app_url = url.set(username=user, password=password)
        yield Target(
            "mariadb",
            app_url.render_as_string(hide_password=False),
            backend_url,
            url.database,
            password,
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


LedgerFactory = Callable[..., Flask]


@pytest.fixture
def ledger_app() -> Iterator[LedgerFactory]:
    """Build ledger apps with fresh tables: ``ledger_app(url, engine_options={...})``.

    Tables are dropped and every engine disposed at the end; the outbox is cleared.
    """
    apps: list[Flask] = []

    def make(url: str, *, engine_options: Mapping[str, Any] | None = None) -> Flask:
        app = create_app({"UOW_DATABASE_URL": url, "UOW_ENGINE_OPTIONS": dict(engine_options or {})})
        with app.app_context():
            db.drop_all()
            db.create_all()
        apps.append(app)
        return app

    outbox.clear()
    yield make
    outbox.clear()
    for app in apps:
        with app.app_context():
            try:
                db.drop_all()
            finally:
                db.dispose()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; written as JSON when ``FIGURES_ENV`` is set."""
    recorded: dict[str, Any] = {}
    yield recorded
    directory = os.environ.get(FIGURES_ENV)
    if not directory or not recorded:
        return
    nodeid = request.node.nodeid
    name = hashlib.sha1(nodeid.encode()).hexdigest()[:16] + ".json"
    document = {"test": nodeid, "mode": MODE, "figures": recorded}
    Path(directory, name).write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
