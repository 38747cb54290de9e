"""``db.dispose()`` ends the outbox's threads once what they were handed is delivered, and
the outbox starts them again on next use, as engines reconnect."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from celery import Celery

from flask_uow import Database

from .outbox_support import Collector, drop_database, make_database, thing

OUTBOX_THREADS = ("flask-uow-outbox-local", "flask-uow-outbox-publisher", "flask-uow-outbox-marker")


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


@pytest.fixture
def memory_celery() -> Iterator[Celery]:
    """A Celery app on kombu's in-memory broker: the immediate lane's publisher thread
    without RabbitMQ."""
    app = Celery("outbox_dispose", broker="memory://")
    yield app
    app.close()


def outbox_threads(database: Database, before: set[threading.Thread]) -> list[str]:
    """Names of the live outbox threads of ``database`` (started since ``before``)."""
    return sorted(
        thread.name.split(" ")[0]
        for thread in threading.enumerate()
        if thread not in before
        and thread.name.startswith(OUTBOX_THREADS)
        and thread.name.endswith(repr(database))
    )


def unpublished(database: Database) -> int:
    """Outbox rows not marked published, read on a connection of its own."""
    engine = sa.create_engine(database.engine.url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        found = connection.scalar(
            sa.text("SELECT count(*) FROM flask_uow_outbox WHERE published_at IS NULL")
        )
    engine.dispose()
    return int(found or 0)


def test_after_dispose_no_outbox_thread_of_the_database_is_alive(
    odb: Database, memory_celery: Celery
) -> None:
    before = set(threading.enumerate())
    odb.outbox.publish_locally({"noop": lambda: None})
    with odb.unit_of_work():
        odb.enqueue("noop")
    odb.outbox.publish_with(memory_celery)  # the publisher thread, which hands to the marker
    with odb.unit_of_work():
        odb.enqueue("outbox_dispose.anything")
    odb.outbox.flush(timeout=30)
    assert outbox_threads(odb, before) == sorted(OUTBOX_THREADS)

    odb.dispose()

    assert outbox_threads(odb, before) == []
    assert unpublished(odb) == 0


@pytest.mark.anyio
async def test_after_dispose_async_no_outbox_thread_of_the_database_is_alive(
    odb: Database, anyio_backend: str
) -> None:
    before = set(threading.enumerate())
    odb.outbox.publish_locally({"noop": lambda: None})
    with odb.unit_of_work():
        odb.enqueue("noop")
    assert outbox_threads(odb, before) == ["flask-uow-outbox-local"]

    await odb.dispose_async()

    assert outbox_threads(odb, before) == []


def test_messages_committed_just_before_dispose_are_delivered_and_marked(
    odb: Database,
) -> None:
    ran: list[int] = []
    odb.outbox.publish_locally({"record": ran.append})
    for number in range(20):
        with odb.unit_of_work():
            odb.enqueue("record", number)

    odb.dispose()  # no flush: dispose finishes what was handed over

    assert sorted(ran) == list(range(20))
    assert unpublished(odb) == 0


def test_a_message_the_immediate_lane_published_before_dispose_is_marked_by_dispose(
    odb: Database,
) -> None:
    target = Collector()
    odb.outbox.publish_with(target)
    with odb.unit_of_work():
        odb.enqueue("mail.send", 1)

    odb.dispose()  # the marker thread had not marked it yet: dispose marks it

    assert target.tasks == ["mail.send"]
    assert unpublished(odb) == 0


def test_a_task_still_running_when_dispose_stops_waiting_leaves_its_message_pending(
    odb: Database,
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(name: str) -> None:
        started.set()
        release.wait(30)
        ran.append(name)

    odb.outbox.publish_locally({"slow": slow}, relay_thread=False)
    with odb.unit_of_work():
        odb.enqueue("slow", "late")
    assert started.wait(30)

    odb.outbox.close(timeout=0)  # what db.dispose() does, without its 30 s of patience

    assert ran == [] and unpublished(odb) == 1  # not lost: pending in the table
    release.set()
    odb.outbox.flush(timeout=30)
    assert ran == ["late"] and unpublished(odb) == 0


def test_a_unit_after_dispose_enqueues_and_its_message_is_delivered_by_new_threads(
    odb: Database, memory_celery: Celery
) -> None:
    before = set(threading.enumerate())
    ran: list[str] = []
    odb.outbox.publish_locally({"record": ran.append})
    with odb.unit_of_work():
        odb.enqueue("record", "before")
    odb.dispose()

    with odb.unit_of_work():
        odb.session.execute(sa.insert(thing).values(name="after"))
        odb.enqueue("record", "after")
    odb.outbox.flush(timeout=30)

    assert ran == ["before", "after"]
    assert outbox_threads(odb, before) == ["flask-uow-outbox-local"]
    assert odb.outbox.pending() == 0

    odb.outbox.publish_with(memory_celery)
    with odb.unit_of_work():
        odb.enqueue("outbox_dispose.anything")
    odb.dispose()
    with odb.unit_of_work():
        odb.enqueue("outbox_dispose.anything")
    odb.outbox.flush()
    assert "flask-uow-outbox-publisher" in outbox_threads(odb, before)
    assert odb.outbox.pending() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_in_a_forked_child_dispose_returns_and_the_next_unit_is_delivered_by_its_own_thread(
    odb: Database,
) -> None:
    ran: list[str] = []
    odb.outbox.publish_locally({"record": ran.append}, relay_thread=False)
    with odb.unit_of_work():
        odb.enqueue("record", "parent")
    odb.outbox.flush(timeout=30)  # the parent's thread is alive, idle
    odb.dispose()  # no pooled connection for the child to share
    with odb.unit_of_work():
        odb.enqueue("record", "parent again")
    odb.outbox.flush(timeout=30)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            odb.dispose()  # the parent's thread is not here: nothing to wait for
            with odb.unit_of_work():
                odb.enqueue("record", "child")
            odb.outbox.flush(timeout=30)
            os.write(write, ",".join(ran).encode())
            odb.dispose()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    assert seen == "parent,parent again,child"
    assert ran == ["parent", "parent again"]
