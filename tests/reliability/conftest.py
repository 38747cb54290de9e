"""Fixtures of the reliability suite: the database under test (with a password on servers),
ledger apps on it, and the figures each test records for ``RELIABILITY.md``."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import secrets
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ledger.app import create_app
from ledger.database import db
from ledger.models import Base
from ledger.services.notifications import outbox

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

    Tables are dropped and every engine disposed at the end; the outbox is cleared. The first
    ``dispose`` also ends the outbox's in-process thread, before the tables go.
    """
    apps: list[tuple[Flask, str | None]] = []

    def make(
        url: str,
        *,
        engine_options: Mapping[str, Any] | None = None,
        admin_url: str | None = None,
    ) -> Flask:
        """``admin_url``: drop the tables through it at the end (when ``url`` may be gone)."""
        app: Flask = create_app(
            {"UOW_DATABASE_URL": url, "UOW_ENGINE_OPTIONS": dict(engine_options or {})}
        )
        with app.app_context():
            db.drop_all()
            db.create_all()
        apps.append((app, admin_url))
        return app

    outbox.clear()
    yield make
    outbox.clear()
    for app, admin_url in apps:
        with app.app_context():
            db.dispose()  # the pool may hold connections that a test killed
            if admin_url is None:
                try:
                    db.drop_all()
                finally:
                    db.dispose()
                continue
        engine = admin_engine(admin_url)
        try:
            Base.metadata.drop_all(engine)
        finally:
            engine.dispose()


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


LOGGERS = ("flask_uow", "sqlalchemy", "ledger", "werkzeug")
"""The loggers whose records ``logs`` takes over from pytest's capture."""


class LogRecorder(logging.Handler):
    """Keeps log records, with their tracebacks rendered to plain text at once.

    Records never reach pytest's capture handler, which would format them in the thread that
    logs: on Python 3.11 formatting a traceback calls ``ast.parse``, whose recursion counter is
    not thread-safe, and many threads logging tracebacks at once can corrupt it
    (CPython gh-106905: "SystemError: AST constructor recursion depth mismatch"). The text
    is built here without ``ast``, and the traceback dropped so no frame is kept alive.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = _render(record.exc_info[1])
            record.exc_info = None
        with self._lock:
            self.records.append(record)

    def summary(self, level: int = logging.WARNING) -> dict[str, int]:
        """How many records at ``level`` or above, by level, logger and message template."""
        with self._lock:
            kinds = Counter(
                f"{r.levelname} {r.name}: {str(r.msg)[:70]}"
                for r in self.records
                if r.levelno >= level
            )
        return dict(sorted(kinds.items()))

    def text(self) -> str:
        """Every record formatted, tracebacks included: what a log file would hold."""
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        with self._lock:
            return "\n".join(formatter.format(record) for record in self.records)


def _render(error: BaseException) -> str:
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines.append("Traceback (most recent call last):")
        for frame in traceback.extract_tb(current.__traceback__):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
        lines.extend(line.rstrip("\n") for line in traceback.format_exception_only(current))
        current = current.__cause__ or current.__context__
    return "\n".join(lines)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogRecorder]:
    """Every record of the app's loggers, kept for counting and for leak checks at the end."""
    recorder = LogRecorder()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", False)
        logger.addHandler(recorder)
    yield recorder
    # A connection that a failed checkout or checkin left behind is returned by the garbage
    # collector, which logs "Exception during reset" with a traceback: let that happen here.
    gc.collect()
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(recorder)
