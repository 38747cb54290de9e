"""Outbox bugs the ledger ran into, each pinned by a test that failed until the outbox was fixed:
the in-process relay thread of an app-bound Database, a relay started while PostgreSQL is down,
and outbox transactions of other threads under ``isolated()``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow import Database
from flask_uow.outbox import Message


def test_publish_locally_relays_leftovers_for_a_database_bound_to_a_flask_app(
    tmp_path: Path,
) -> None:
    database = Database(metadata=sa.MetaData())
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    database.init_app(app)
    with app.app_context():
        database.create_all()
        with database.unit_of_work():  # no target yet: the message waits for a relay
            database.enqueue("leftover", 1)
    ran: list[int] = []

    database.outbox.publish_locally({"leftover": ran.append}, idle_seconds=0.05)

    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.05)
    with app.app_context():
        database.dispose()
    assert ran == [1]


def test_a_relay_started_while_postgresql_is_unreachable_keeps_waiting_for_it() -> None:
    pytest.importorskip("psycopg")
    database = Database(
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        metadata=sa.MetaData(),
        engine_options={"connect_args": {"connect_timeout": 1}},
    )
    sent: list[Message] = []
    database.outbox.publish_with(sent.extend)
    started = time.monotonic()

    published = database.outbox.run_relay(
        stop=lambda: time.monotonic() - started > 0.5, idle_seconds=0.1
    )

    assert published == 0


def test_under_isolated_an_outbox_transaction_of_another_thread_is_refused_as_a_unit_is(
    tmp_path: Path,
) -> None:
    from flask_uow import UnitOfWorkError
    from flask_uow.testing import isolated

    database = Database(f"sqlite:///{tmp_path / 'app.db'}", metadata=sa.MetaData())
    database.create_all()
    errors: dict[str, str] = {}

    def from_another_thread() -> None:
        for name, action in (
            ("unit", database.unit_of_work),
            ("outbox", database.outbox.transaction),
        ):
            try:
                with action():
                    errors[name] = "ran"
            except UnitOfWorkError as error:
                errors[name] = type(error).__name__

    with isolated(database):
        thread = threading.Thread(target=from_another_thread)
        thread.start()
        thread.join()
    database.dispose()

    assert errors == {"unit": "UnitOfWorkError", "outbox": "UnitOfWorkError"}
