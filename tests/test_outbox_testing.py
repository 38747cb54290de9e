"""Testing with the outbox: committed messages listed under isolated(), tasks run eagerly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation
from flask_uow.outbox.testing import committed_messages, eager_tasks
from flask_uow.testing import isolated

from .outbox_support import drop_database, make_database, thing


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


def test_committed_messages_lists_what_units_committed_under_isolated(odb: Database) -> None:
    with isolated(odb), committed_messages(odb) as messages:
        with odb.unit_of_work():
            odb.enqueue("mail.send", 1)
            with pytest.raises(ValueError), odb.unit_of_work(propagation=Propagation.NESTED):
                odb.enqueue("dropped")
                raise ValueError
        with pytest.raises(ValueError), odb.unit_of_work():
            odb.enqueue("rolled back")
            raise ValueError
        assert [(message.task, message.args) for message in messages] == [("mail.send", [1])]
    with odb.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM flask_uow_outbox")) == 0


def test_eager_tasks_run_each_committed_task_in_process_after_its_unit(odb: Database) -> None:
    ran: list[str] = []

    def record(name: str) -> None:
        ran.append(name)
        odb.session.execute(sa.insert(thing).values(name=name))

    with isolated(odb), eager_tasks(odb, {"record": record}):
        with odb.unit_of_work():
            odb.enqueue("record", "a")
            assert ran == []
        assert ran == ["a"]
        with odb.unit_of_work():
            assert list(odb.session.scalars(sa.select(thing.c.name))) == ["a"]
            assert odb.outbox.pending() == 0
    assert odb.outbox.target is None


def test_publish_locally_runs_a_task_object_after_commit_and_relays_leftovers(
    odb: Database,
) -> None:
    ran: list[int] = []
    failures = [1]

    def flaky(number: int) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("first run fails")
        ran.append(number)

    odb.outbox.retry_base_seconds = 0.0
    odb.outbox.publish_locally(relay_thread=False)
    with odb.unit_of_work():
        odb.enqueue(flaky, 7)
    assert ran == [] and odb.outbox.pending() == 1
    assert odb.outbox.relay_once() == 1
    assert ran == [7]
