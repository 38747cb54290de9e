"""Delivering in this process: off the committing thread, in its app's context, and by
default (no target set) for the task objects given to ``enqueue``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_uow import Database
from flask_uow.testing import isolated

from .outbox_support import drop_database, make_database, thing


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


def _names(database: Database) -> list[str]:
    with database.engine.connect() as connection:
        return list(connection.scalars(sa.select(thing.c.name).order_by(thing.c.id)))


def test_with_no_target_a_task_object_runs_in_process_after_its_unit_commits(
    odb: Database,
) -> None:
    def record(name: str) -> None:
        odb.session.execute(sa.insert(thing).values(name=name))

    with odb.unit_of_work():
        odb.enqueue(record, "delivered")

    odb.outbox.flush()
    assert _names(odb) == ["delivered"]
    assert odb.outbox.pending() == 0
    assert odb.outbox.target is None


def test_with_no_target_a_bare_task_name_waits_in_the_table_for_one(odb: Database) -> None:
    def record(name: str) -> None:
        odb.session.execute(sa.insert(thing).values(name=name))

    with odb.unit_of_work():
        odb.enqueue(record, "known")
        odb.enqueue("billing.invoice", 7)

    odb.outbox.flush()
    assert odb.outbox.relay_once() == 0, "the default relayed a task it does not know"
    assert _names(odb) == ["known"]
    assert odb.outbox.status().pending == 1
    assert odb.outbox.status().parked == 0


def test_tasks_run_locally_off_the_thread_that_committed(odb: Database) -> None:
    threads: list[threading.Thread] = []
    odb.outbox.publish_locally({"where": lambda: threads.append(threading.current_thread())})

    with odb.unit_of_work():
        odb.enqueue("where")

    odb.outbox.flush()
    assert len(threads) == 1 and threads[0] is not threading.current_thread()
    assert odb.outbox.pending() == 0


def test_under_isolated_tasks_run_locally_in_the_tests_thread(odb: Database) -> None:
    threads: list[threading.Thread] = []
    odb.outbox.publish_locally(
        {"where": lambda: threads.append(threading.current_thread())}, relay_thread=False
    )

    with isolated(odb):
        with odb.unit_of_work():
            odb.enqueue("where")
        assert threads == [threading.current_thread()]
        assert odb.outbox.pending() == 0


def test_a_task_run_locally_finds_the_engine_of_its_flask_app(tmp_path: Path) -> None:
    flask = pytest.importorskip("flask")
    database = Database(metadata=sa.MetaData())
    app = flask.Flask(__name__)
    app.config["UOW_DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    database.init_app(app)
    seen: list[str] = []

    def where() -> None:
        seen.append(str(database.engine.url))

    database.outbox.publish_locally({"where": where}, relay_thread=False)
    with app.app_context():
        database.create_all()
        with database.unit_of_work():
            database.enqueue("where")
        database.outbox.flush()
        database.dispose()

    assert seen == [app.config["UOW_DATABASE_URL"]]
