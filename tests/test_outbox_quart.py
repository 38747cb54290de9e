"""The outbox's in-process default in a Quart app registered with ``init_app`` only: the
tasks run after their request's unit commits, in the app's context, and leftovers are
relayed, as in a Flask app."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from quart import Quart

from flask_uow import Database, UnitOfWorkError

from .outbox_support import metadata, thing
from .test_outbox_cli import check_relay_publishes_two_then_stops_on_sigterm, relay_app

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(backend_url: str, anyio_backend: str) -> AsyncIterator[Quart]:
    app = Quart(__name__)
    app.config.update(UOW_DATABASE_URL=backend_url, UOW_PER_REQUEST=True)
    db = Database(metadata=metadata)
    db.init_app(app)
    async with app.test_app(), app.app_context():
        db.drop_all()
        db.create_all()
        yield app
        # Ends the outbox's thread after its deliveries: it must not run the next test's
        # leftovers (their task has the same name; PgBouncer's backend is PostgreSQL's).
        await db.dispose_async()
        db.drop_all()
        db.dispose()


def names(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        found = list(connection.scalars(sa.select(thing.c.name).order_by(thing.c.id)))
    engine.dispose()
    return found


async def test_a_task_enqueued_in_a_quart_request_runs_in_process_after_it_commits(
    app: Quart, backend_url: str
) -> None:
    db: Database = app.extensions["flask-uow"]
    ran_in: list[str] = []

    def record(name: str) -> None:
        ran_in.append(str(db.engine.url))  # the app's engine: run in the app's context
        db.session.execute(sa.insert(thing).values(name=name))

    @app.post("/orders/<name>")
    async def order(name: str) -> str:
        db.enqueue(record, name)
        return "ordered"

    assert (await app.test_client().post("/orders/first")).status_code == 200
    db.outbox.flush(timeout=30)
    assert names(backend_url) == ["first"]
    assert ran_in == [str(db.engine.url)]
    assert db.outbox.pending() == 0


async def test_a_quart_apps_in_process_default_relays_a_task_that_failed_once(
    app: Quart, backend_url: str
) -> None:
    db: Database = app.extensions["flask-uow"]
    db.outbox.retry_base_seconds = 0.01
    attempts: list[str] = []

    def flaky(name: str) -> None:
        attempts.append(name)
        if len(attempts) == 1:
            raise ConnectionError("the first delivery fails")
        db.session.execute(sa.insert(thing).values(name=name))

    @app.post("/orders/<name>")
    async def order(name: str) -> str:
        db.enqueue(flaky, name)
        return "ordered"

    assert (await app.test_client().post("/orders/retried")).status_code == 200
    deadline = time.monotonic() + 30
    while names(backend_url) != ["retried"] and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the relay thread, which retries after its idle tick
    assert names(backend_url) == ["retried"]
    assert attempts == ["retried", "retried"]
    assert db.outbox.pending() == 0


async def test_outside_an_app_context_the_outbox_of_a_quart_app_says_how_to_push_one(
    app: Quart,
) -> None:
    db: Database = app.extensions["flask-uow"]
    errors: list[UnitOfWorkError] = []

    def outside_apps() -> None:  # a thread of its own starts with no app context
        try:
            db.outbox.pending()
        except UnitOfWorkError as error:
            errors.append(error)

    thread = threading.Thread(target=outside_apps)
    thread.start()
    thread.join()
    (error,) = errors
    assert "no app context is active" in str(error)
    assert "'async with app.app_context():' in Quart" in str(error)
    assert "from a Flask app" not in str(error)


def quart_command(tmp_path: Path, url: str, *args: str) -> subprocess.Popen[str]:
    """``quart --app relay_app:create_app uow ARGS`` in a subprocess, on ``url``."""
    (tmp_path / "relay_app.py").write_text(relay_app("Quart"))
    return subprocess.Popen(
        [sys.executable, "-m", "quart", "--app", "relay_app:create_app", "uow", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
            "RELAY_APP_DATABASE_URL": url,
        },
    )


def test_quart_uow_relay_publishes_the_backlog_in_the_app_context_and_stops_on_sigterm(
    backend_url: str, tmp_path: Path
) -> None:
    db = Database(backend_url, metadata=metadata)
    db.drop_all()
    db.create_all()
    with db.unit_of_work():
        for number in range(2):
            db.enqueue("mail.send", number)
    relay = quart_command(tmp_path, backend_url, "relay", "--idle", "0.05")
    check_relay_publishes_two_then_stops_on_sigterm(relay)
    status = quart_command(tmp_path, backend_url, "outbox", "status")
    report, _ = status.communicate(timeout=20)
    assert status.returncode == 0, report
    assert "pending: 0 (0 being published)" in report
    assert db.outbox.pending() == 0
    db.drop_all()
    db.dispose()
