"""The processes of the outbox chaos test: a producer app and relays, each killable.

``python -m tests.reliability.outbox_chaos_app produce URL QUEUE START COUNT KILL_AT``
commits units ``START`` to ``START + COUNT - 1``; with ``KILL_AT`` >= 0 it SIGKILLs itself
right after that unit's COMMIT, before publishing. ``... relay URL QUEUE FAULT`` runs a
relay loop; ``FAULT`` is ``none``, ``after-publish`` (SIGKILL after its first batch reached
the broker, before marking it), ``mid-batch`` (SIGKILL after half of its first batch) or
``claim`` (its connection is killed by the server during its first claim; it carries on)
or ``late`` (starts claiming after 2 s, so that another relay claims first).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import sqlalchemy as sa
from celery import Celery

from flask_uow import Database, Propagation
from flask_uow.outbox import Message
from flask_uow.outbox._targets import CeleryTarget
from tests.outbox_support import metadata

BROKER_URL = os.environ.get("OUTBOX_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
LEASE_SECONDS = 1.0
TASK = "outbox_tests.record"

produced = sa.Table(
    "outbox_chaos_produced",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
)
"""One row per unit the producer committed: the messages that must reach a consumer."""


def database(url: str, queue: str) -> tuple[Database, Celery]:
    app = Celery("outbox_chaos", broker=BROKER_URL)
    app.conf.task_default_queue = queue
    db = Database(url, metadata=metadata)
    db.outbox.lease_seconds = LEASE_SECONDS
    db.outbox.retry_base_seconds = 0.1
    db.outbox.retry_max_seconds = 1.0  # back within a second of RabbitMQ's return
    db.outbox.publish_with(app)
    return db, app


def kill_myself() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def produce(url: str, queue: str, start: int, count: int, kill_at: int) -> None:
    db, _ = database(url, queue)
    outbox = db.outbox
    for number in range(start, start + count):
        name = f"u{number}"
        if number == kill_at:
            outbox._after_commit = lambda session: kill_myself()  # type: ignore[method-assign]
        with db.unit_of_work():
            db.session.execute(sa.insert(produced).values(name=name))
            key = f"k{number % 3}" if number % 2 else None
            outbox.enqueue(TASK, args=[name], key=key)
            try:
                with db.unit_of_work(propagation=Propagation.NESTED):
                    db.enqueue(TASK, f"savepoint-{number}")
                    raise LookupError("this savepoint rolls back")
            except LookupError:
                pass
        if number % 5 == 0:
            try:
                with db.unit_of_work():
                    db.enqueue(TASK, f"rolled-back-{number}")
                    raise LookupError("this unit rolls back")
            except LookupError:
                pass
    print("produced", flush=True)


def relay(url: str, queue: str, fault: str) -> None:
    db, app = database(url, queue)
    outbox = db.outbox
    outbox.batch_size = 4
    celery_target = CeleryTarget(app)
    if fault in ("after-publish", "mid-batch"):

        def crashing(messages: list[Message]) -> Any:
            if fault == "mid-batch":
                celery_target(messages[: len(messages) // 2])
            else:
                celery_target(messages)
            kill_myself()

        outbox.publish_with(crashing)
    elif fault == "claim":
        _kill_connection_at_first_claim(db)
    print("relaying", flush=True)
    if fault == "late":
        time.sleep(2.0)  # lets the other relay claim first
    outbox.run_relay(idle_seconds=0.1)


def _kill_connection_at_first_claim(db: Database) -> None:
    engine = db.engine
    killer = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    done: list[bool] = []

    def kill(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            done
            or "leased_until" not in statement
            or not statement.lstrip().startswith(("UPDATE", "SELECT"))
        ):
            return
        done.append(True)
        if engine.dialect.name == "postgresql":
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            statement = f"SELECT pg_terminate_backend({pid})"
        else:
            pid = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
            statement = f"KILL {pid}"
        with killer.connect() as other:
            other.exec_driver_sql(statement)
            other.commit()
        print("killed the claim's connection", flush=True)

    sa.event.listen(engine, "before_cursor_execute", kill)


if __name__ == "__main__":
    command, url, queue, *rest = sys.argv[1:]
    if command == "produce":
        produce(url, queue, int(rest[0]), int(rest[1]), int(rest[2]))
    else:
        relay(url, queue, rest[0])
