"""Enqueueing messages in a unit's transaction: written at COMMIT, dropped on ROLLBACK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from flask_uow import Database, NoActiveUnitOfWork, Propagation, ReadOnlyViolation

from .outbox_support import drop_database, make_database, statements, stored_tasks, thing


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


def test_enqueue_returns_a_uuid_and_writes_the_message_when_the_unit_commits(
    odb: Database,
) -> None:
    with odb.unit_of_work():
        message_id = odb.enqueue("mail.send", 7, subject="hi")
        assert stored_tasks(odb.engine) == []
    assert len(message_id) == 36 and message_id.count("-") == 4
    assert stored_tasks(odb.engine) == ["mail.send"]
    with odb.engine.connect() as connection:
        row = connection.execute(sa.select(odb.outbox.tables.outbox)).one()
    assert (row.id, row.args, row.kwargs) == (message_id, [7], {"subject": "hi"})


def test_a_unit_that_rolls_back_writes_no_message(odb: Database) -> None:
    with pytest.raises(ValueError), odb.unit_of_work():
        odb.enqueue("mail.send")
        raise ValueError
    assert stored_tasks(odb.engine) == []


def test_a_nested_unit_that_rolls_back_drops_only_its_own_messages(odb: Database) -> None:
    with odb.unit_of_work() as uow:
        odb.enqueue("before")
        with pytest.raises(ValueError), odb.unit_of_work(propagation=Propagation.NESTED):
            odb.enqueue("dropped")
            raise ValueError
        with odb.unit_of_work(propagation=Propagation.NESTED):
            odb.enqueue("released")
            with pytest.raises(ValueError), odb.unit_of_work(propagation=Propagation.NESTED):
                odb.enqueue("inner dropped")
                raise ValueError
        odb.enqueue("after")
        ids = list(uow.session.info["flask_uow_outbox_ids"])
    assert stored_tasks(odb.engine) == ["before", "released", "after"]
    assert len(ids) == 3


def test_joined_units_share_the_outermost_transaction(odb: Database) -> None:
    with pytest.raises(ValueError), odb.unit_of_work():
        with odb.unit_of_work():
            odb.enqueue("joined")
        assert stored_tasks(odb.engine) == []
        raise ValueError
    assert stored_tasks(odb.engine) == []
    with odb.unit_of_work(), odb.unit_of_work():
        odb.enqueue("joined")
    assert stored_tasks(odb.engine) == ["joined"]


def test_enqueue_outside_a_unit_raises_no_active_unit_of_work(odb: Database) -> None:
    with pytest.raises(NoActiveUnitOfWork, match="inside 'with db.unit_of_work"):
        odb.enqueue("mail.send")
    with (
        odb.unit_of_work(propagation=Propagation.NOT_SUPPORTED),
        pytest.raises(NoActiveUnitOfWork),
    ):
        odb.enqueue("mail.send")


def test_enqueue_in_a_read_only_unit_raises_read_only_violation(odb: Database) -> None:
    with odb.unit_of_work(read_only=True), pytest.raises(ReadOnlyViolation, match="read-write"):
        odb.enqueue("mail.send")


def test_arguments_that_are_not_json_are_refused_at_the_call(odb: Database) -> None:
    with odb.unit_of_work(), pytest.raises(TypeError, match="stored as JSON"):
        odb.enqueue("mail.send", object())
    with (
        odb.unit_of_work(),
        pytest.raises(TypeError, match="Celery task, a function or a task name"),
    ):
        odb.enqueue(42)


def test_a_unit_that_enqueues_costs_one_insert_and_one_that_does_not_costs_none(
    odb: Database,
) -> None:
    with odb.unit_of_work():
        odb.session.execute(sa.insert(thing).values(name="warm"))  # connect, BEGIN once
    with statements(odb.engine) as plain, odb.unit_of_work():
        odb.session.execute(sa.insert(thing).values(name="a"))
    with statements(odb.engine) as enqueuing, odb.unit_of_work():
        odb.session.execute(sa.insert(thing).values(name="b"))
        for number in range(50):
            odb.enqueue("mail.send", number)
    extra = [statement for statement in enqueuing if statement not in plain]
    assert len(enqueuing) == len(plain) + 1
    assert len(extra) == 1 and "INSERT INTO flask_uow_outbox" in extra[0]
    assert stored_tasks(odb.engine) == ["mail.send"] * 50


def test_create_all_creates_the_outbox_tables(odb: Database) -> None:
    names = set(sa.inspect(odb.engine).get_table_names())
    assert {"flask_uow_outbox", "flask_uow_outbox_keys", "flask_uow_inbox"} <= names


def test_messages_of_one_key_get_sequence_numbers_in_commit_order(odb: Database) -> None:
    for number in range(3):
        with odb.unit_of_work():
            odb.outbox.enqueue("ordered", args=[number], key="account-1")
            odb.outbox.enqueue("other", key="account-2")
    table = odb.outbox.tables.outbox
    with odb.engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.args, table.c.key_seq)
            .where(table.c.key == "account-1")
            .order_by(table.c.key_seq)
        ).all()
    assert [(row.args, row.key_seq) for row in rows] == [([0], 1), ([1], 2), ([2], 3)]


@pytest.fixture
async def aodb(odb: Database) -> AsyncIterator[Database]:
    yield odb
    await odb.dispose_async()


@pytest.mark.anyio
async def test_an_async_unit_writes_its_messages_when_it_commits(aodb: Database) -> None:
    async with aodb.unit_of_work():
        aodb.enqueue("async.task", 1)
        async with aodb.unit_of_work(propagation=Propagation.NESTED) as nested:
            aodb.enqueue("dropped")
            nested.set_rollback()
    assert stored_tasks(aodb.engine) == ["async.task"]
