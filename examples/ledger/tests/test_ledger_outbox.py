"""``transfer.completed`` travels through the transactional outbox: written with the transfer,
delivered once after COMMIT (in process, or by a Celery worker), never for a failed transfer."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow import CommitOutcomeUnknown
from flask_uow.outbox.testing import committed_messages
from flask_uow.testing import scratch_database
from ledger.app import create_app
from ledger.database import db
from ledger.services import accounts, customers, notifications, transfers
from ledger.services.notifications import TRANSFER_COMPLETED, outbox
from ledger.testing import UNKNOWN_ID, LedgerClient, error_code

BROKER_URL = os.environ.get("LEDGER_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
WORKER_SECONDS = 60.0
"""How long the Celery test waits for its worker's delivery before it fails."""


def _notifications(api: LedgerClient, transfer_id: int) -> Any:
    response = api.get(f"/transfers/{transfer_id}/notifications")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _lost_connection_error(dialect_name: str) -> Exception:
    """What the driver raises when the connection dies while COMMIT's answer is on its way."""
    if dialect_name == "sqlite":
        import sqlite3

        return sqlite3.ProgrammingError("Cannot operate on a closed database.")
    if dialect_name == "postgresql":
        import psycopg

        return psycopg.OperationalError("server closed the connection unexpectedly")
    import pymysql  # type: ignore[import-untyped]

    lost: Exception = pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
    return lost


def test_a_committed_transfer_is_delivered_once_in_process_and_listed_by_the_api(
    api: LedgerClient,
) -> None:
    alice, bob = api.open_account(500), api.open_account()

    transfer = api.transfer(alice, bob, 200)

    assert _notifications(api, transfer["id"]) == {
        "items": [{"kind": "transfer.completed", "delivered_by": "in-process"}]
    }
    assert [dict(n.payload) for n in outbox.sent("transfer.completed")] == [
        {"transfer_id": transfer["id"], "from_account": alice, "to_account": bob, "amount": 200}
    ]
    assert db.outbox.pending() == 0
    assert db.outbox.relay_once() == 0, "a relay found the delivered message again"
    assert len(outbox.sent("transfer.completed")) == 1


def test_a_transfer_writes_its_message_in_its_own_transaction(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id
        bob = customers.register_customer("Bob", "bob@example.com").account.id
        accounts.deposit(alice, 100)

        with committed_messages(db) as messages:
            made = transfers.transfer(alice, bob, 40).transfer

        assert [(m.task, m.args) for m in messages] == [
            (TRANSFER_COMPLETED, [made.id, alice, bob, 40])
        ]


def test_a_refused_transfer_enqueues_and_delivers_nothing(api: LedgerClient) -> None:
    alice, bob = api.open_account(100), api.open_account()

    with committed_messages(db) as messages:
        response = api.post("/transfers", {"from_account": alice, "to_account": bob, "amount": 500})

    assert response.status_code == 409
    assert messages == []
    assert outbox.sent("transfer.completed") == []
    assert db.outbox.status().pending == 0


def test_a_transfer_rolled_back_by_its_enclosing_unit_sends_no_message(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id
        bob = customers.register_customer("Bob", "bob@example.com").account.id
        accounts.deposit(alice, 100)

        with committed_messages(db) as messages:
            with db.unit_of_work() as uow:
                transfers.transfer(alice, bob, 40)
                uow.set_rollback()

        assert messages == []
        assert outbox.sent("transfer.completed") == []
        assert db.outbox.relay_once() == 0


def test_a_message_delivered_again_is_recorded_and_sent_once(api: LedgerClient) -> None:
    alice, bob = api.open_account(500), api.open_account()
    transfer = api.transfer(alice, bob, 200)

    again = notifications.deliver_transfer_completed(transfer["id"], alice, bob, 200)

    assert again is False
    assert len(_notifications(api, transfer["id"])["items"]) == 1
    assert len(outbox.sent("transfer.completed")) == 1


def test_a_transfer_whose_commit_answer_was_lost_is_announced_once_by_its_first_unit(
    threaded_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lost unit's message waits out its lease (reserved for the immediate lane, which
    # never heard of the COMMIT) before a relay takes it: a short one keeps the test short.
    monkeypatch.setattr(db.outbox, "lease_seconds", 0.5)
    with threaded_app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id
        bob = customers.register_customer("Bob", "bob@example.com").account.id
        accounts.deposit(alice, 100)
        dialect = db.engine.dialect
        commit = dialect.do_commit

        def commit_then_lose_the_answer(dbapi_connection: Any) -> None:
            commit(dbapi_connection)
            getattr(dbapi_connection, "dbapi_connection", dbapi_connection).close()
            raise _lost_connection_error(dialect.name)

        dialect.do_commit = commit_then_lose_the_answer  # type: ignore[method-assign]
        try:
            with pytest.raises(CommitOutcomeUnknown):
                transfers.transfer(alice, bob, 40, idempotency_key="lost-answer")
        finally:
            dialect.do_commit = commit  # type: ignore[method-assign]
        resent = transfers.transfer(alice, bob, 40, idempotency_key="lost-answer")
        deadline = time.monotonic() + WORKER_SECONDS
        while db.outbox.pending():  # a relay delivers what the lost unit committed
            assert time.monotonic() < deadline, db.outbox.status()
            if not db.outbox.relay_once():
                time.sleep(0.1)

    assert resent.replayed
    assert [n.payload["transfer_id"] for n in outbox.sent("transfer.completed")] == [
        resent.transfer.id
    ]


def test_the_notifications_of_an_unknown_transfer_are_not_found(api: LedgerClient) -> None:
    response = api.get(f"/transfers/{UNKNOWN_ID}/notifications")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.fixture
def celery_ledger(backend_url: str) -> Iterator[tuple[Flask, str, str]]:
    """The ledger publishing to Celery on a queue of its own, on a scratch database with real
    commits (the worker is another process); yields the app, its URL and the queue."""
    queue = f"ledger-test-{secrets.token_hex(5)}"
    with scratch_database(backend_url, f"ledger_celery_{secrets.token_hex(4)}") as scratch:
        url = scratch.render_as_string(hide_password=False)
        app = create_app(
            {
                "UOW_DATABASE_URL": url,
                "TESTING": True,
                "CELERY_BROKER_URL": BROKER_URL,
                "CELERY_QUEUE": queue,
            }
        )
        with app.app_context():
            db.create_all()
        try:
            yield app, url, queue
        finally:
            celery_app = app.extensions["celery"]
            close_target = getattr(db.outbox.target, "close", None)
            if close_target is not None:
                close_target()  # the outbox's confirming connection to RabbitMQ
            with celery_app.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)
            celery_app.close()  # its pool of broker connections
            with app.app_context():
                db.dispose()


def _worker(url: str, queue: str) -> subprocess.Popen[bytes]:
    """``make worker``'s command, on the test's database and queue."""
    env = {**os.environ, "DATABASE_URL": url, "CELERY_BROKER_URL": BROKER_URL}
    env["CELERY_QUEUE"] = queue
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "ledger.worker", "worker", "--pool", "solo"]
        + ["--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.serial  # a real Celery worker on the one shared RabbitMQ: one at a time
def test_a_celery_worker_records_the_delivery_and_the_api_shows_it(
    celery_ledger: tuple[Flask, str, str],
) -> None:
    app, url, queue = celery_ledger
    api = LedgerClient(app.test_client())
    alice, bob = api.open_account(500), api.open_account()
    transfer = api.transfer(alice, bob, 200)  # published to RabbitMQ right after COMMIT
    assert _notifications(api, transfer["id"]) == {"items": []}, "delivered without a worker"
    with app.app_context():
        assert db.outbox.pending() == 0, "not confirmed by RabbitMQ"

    worker = _worker(url, queue)
    try:
        deadline = time.monotonic() + WORKER_SECONDS
        while not (found := _notifications(api, transfer["id"]))["items"]:
            assert worker.poll() is None, f"the worker stopped: {worker.stderr.read()[-3000:]!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker delivered nothing in time"
            time.sleep(0.2)
    finally:
        worker.kill()  # its message is acknowledged; a warm shutdown takes seconds
        worker.wait(timeout=30)
        assert worker.stderr is not None
        log = worker.stderr.read().decode(errors="replace")
        worker.stderr.close()

    assert found == {"items": [{"kind": "transfer.completed", "delivered_by": "celery"}]}, log
    assert outbox.sent("transfer.completed") == [], "the web process delivered it too"
    with app.app_context(), db.engine.connect() as connection:
        inbox = db.outbox.tables.inbox
        assert connection.scalar(sa.select(sa.func.count()).select_from(inbox)) == 1
