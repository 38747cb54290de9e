"""Delivering outbox messages: the immediate lane after COMMIT, relays, retries and parking."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flask_uow import Database
from flask_uow.outbox import Message

from .outbox_support import Collector, drop_database, make_database, statements, stored_tasks


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    database.outbox.retry_base_seconds = 0.0
    yield database
    drop_database(database)


def test_the_immediate_lane_publishes_after_commit_and_marks_the_messages_published(
    odb: Database,
) -> None:
    target = Collector()
    odb.outbox.publish_with(target)
    with odb.unit_of_work():
        first = odb.enqueue("mail.send", 1)
        second = odb.enqueue("mail.send", 2)
        assert target.messages == []
    assert [message.id for message in target.messages] == [first, second]
    assert target.calls == 1
    assert odb.outbox.pending() == 0
    assert odb.outbox.relay_once() == 0


def test_without_the_immediate_lane_a_relay_publishes_what_is_committed(odb: Database) -> None:
    target = Collector()
    odb.outbox.publish_with(target, immediate=False)
    for number in range(3):
        with odb.unit_of_work():
            odb.enqueue("report.build", number)
    assert target.messages == [] and odb.outbox.pending() == 3
    assert odb.outbox.relay_once() == 3
    assert [message.args for message in target.messages] == [[0], [1], [2]]
    assert odb.outbox.pending() == 0 and odb.outbox.relay_once() == 0


def test_a_failed_publish_never_fails_the_committed_unit_and_a_relay_retries_it(
    odb: Database,
) -> None:
    attempts: list[int] = []

    def flaky(messages: list[Message]) -> None:
        attempts.append(len(messages))
        if len(attempts) == 1:
            raise ConnectionError("broker down")

    odb.outbox.publish_with(flaky)
    with odb.unit_of_work():
        message_id = odb.enqueue("mail.send")
    assert attempts == [1]
    assert odb.outbox.pending() == 1 and odb.outbox.was_committed(message_id)
    assert odb.outbox.relay_once() == 1
    assert attempts == [1, 1] and odb.outbox.pending() == 0


def test_a_message_that_keeps_failing_is_parked_without_blocking_other_keys(
    odb: Database,
) -> None:
    delivered: list[str] = []

    def refuse_poison(messages: list[Message]) -> None:
        if any(message.task == "poison" for message in messages):
            raise ValueError("cannot serialize")
        delivered.extend(message.task for message in messages)

    odb.outbox.publish_with(refuse_poison, immediate=False)
    odb.outbox.max_attempts = 3
    odb.outbox.batch_size = 1
    with odb.unit_of_work():
        poison = odb.outbox.enqueue("poison", key="a")
        odb.outbox.enqueue("after poison", key="a")
        odb.outbox.enqueue("other key", key="b")
    for _ in range(6):
        odb.outbox.relay_once()
    status = odb.outbox.status()
    assert delivered == ["other key"]
    assert (status.parked, status.pending) == (1, 1)  # "after poison" waits behind its key
    assert odb.outbox.retry(poison)
    odb.outbox.publish_with(lambda messages: delivered.extend(m.task for m in messages))
    odb.outbox.relay_once()
    odb.outbox.relay_once()
    assert delivered == ["other key", "poison", "after poison"]
    assert odb.outbox.status().parked == 0


def test_purge_deletes_parked_messages(odb: Database) -> None:
    def refuse(messages: list[Message]) -> None:
        raise ValueError("no")

    odb.outbox.publish_with(refuse, immediate=False)
    odb.outbox.max_attempts = 1
    with odb.unit_of_work():
        odb.enqueue("poison")
    assert odb.outbox.relay_once() == 0
    assert odb.outbox.status().parked == 1
    assert odb.outbox.purge() == 1
    assert stored_tasks(odb.engine) == []


def test_messages_of_one_key_are_published_in_commit_order(odb: Database) -> None:
    target = Collector()
    odb.outbox.publish_with(target)  # keyed messages always go through a relay
    for number in range(4):
        with odb.unit_of_work():
            odb.outbox.enqueue("ledger.post", args=[number], key="account-7")
    assert target.messages == []
    while odb.outbox.relay_once():
        pass
    assert [message.args for message in target.messages] == [[0], [1], [2], [3]]


def test_a_relay_takes_over_messages_whose_immediate_publisher_died_once_the_lease_ends(
    odb: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = Collector()
    odb.outbox.publish_with(target)
    odb.outbox.lease_seconds = 0.3
    with monkeypatch.context() as patch:
        patch.setattr(odb.outbox, "_after_commit", lambda session: None)  # died after COMMIT
        with odb.unit_of_work():
            odb.enqueue("mail.send")
    assert odb.outbox.relay_once() == 0  # still leased by the process that committed it
    time.sleep(0.35)
    assert odb.outbox.relay_once() == 1
    assert target.tasks == ["mail.send"]


def test_two_relays_at_once_publish_every_message_exactly_once(odb: Database) -> None:
    published: list[str] = []
    lock = threading.Lock()

    def slow(messages: list[Message]) -> None:
        time.sleep(0.01)
        with lock:
            published.extend(message.id for message in messages)

    odb.outbox.publish_with(slow, immediate=False)
    odb.outbox.batch_size = 10
    with odb.unit_of_work():
        ids = [odb.enqueue("fan.out", number) for number in range(200)]
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            while odb.outbox.relay_once():
                pass
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    while odb.outbox.relay_once():  # SQLite: a relay that met the other's lock may stop early
        pass
    assert sorted(published) == sorted(ids)
    assert odb.outbox.pending() == 0


def test_published_rows_are_kept_for_the_retention_then_deleted_in_batches(
    odb: Database,
) -> None:
    odb.outbox.publish_with(Collector())
    with odb.unit_of_work():
        for number in range(5):
            odb.enqueue("mail.send", number)
    assert odb.outbox.status().published_kept == 5
    assert odb.outbox.clean() == 0
    odb.outbox.keep_published_seconds = 0.0
    assert odb.outbox.clean(limit=2) == 2
    assert odb.outbox.clean(limit=10) == 3
    with odb.unit_of_work():
        odb.enqueue("mail.send")
    odb.outbox.flush()  # the immediate lane marks (here: deletes) in batches, off-thread
    assert stored_tasks(odb.engine) == []  # no retention: deleted once confirmed


def test_was_committed_tells_a_committed_message_from_a_rolled_back_one(odb: Database) -> None:
    with odb.unit_of_work():
        committed = odb.enqueue("mail.send")
    with pytest.raises(ValueError), odb.unit_of_work():
        rolled_back = odb.enqueue("mail.send")
        raise ValueError
    assert odb.outbox.was_committed(committed)
    assert not odb.outbox.was_committed(rolled_back)


def test_status_reports_backlog_and_the_age_of_the_oldest_pending_message(
    odb: Database,
) -> None:
    assert odb.outbox.status().oldest_pending_age is None
    with odb.unit_of_work():
        odb.enqueue("mail.send")
    time.sleep(0.05)
    status = odb.outbox.status()
    assert status.pending == 1 and status.parked == 0
    assert status.oldest_pending_age is not None and status.oldest_pending_age >= 0.05


def test_relay_once_without_a_target_says_how_to_set_one(odb: Database) -> None:
    with pytest.raises(RuntimeError, match="publish_with"):
        odb.outbox.relay_once()


def test_the_outbox_tables_live_on_the_database_metadata(odb: Database) -> None:
    assert odb.metadata is not None
    assert isinstance(odb.metadata.tables["flask_uow_outbox"], sa.Table)


def test_an_idle_relay_wakes_up_when_a_unit_commits_a_message(
    odb: Database, backend_name: str, backend_url: str
) -> None:
    target = Collector()
    odb.outbox.publish_with(target, immediate=False)
    done = threading.Event()
    listening = backend_name == "postgresql" and ":6432/" not in backend_url
    idle = 30.0 if listening else 0.05
    relay = threading.Thread(
        target=odb.outbox.run_relay, kwargs={"stop": done.is_set, "idle_seconds": idle}
    )
    relay.start()
    try:
        time.sleep(0.3)  # the relay found nothing and waits
        started = time.monotonic()
        with odb.unit_of_work():
            odb.enqueue("wake.up")
        while not target.messages and time.monotonic() - started < 10:
            time.sleep(0.005)
        woke_after = time.monotonic() - started
    finally:
        done.set()
        if listening:  # wake it once more so that it sees the stop
            with odb.unit_of_work():
                odb.enqueue("wake.up")
        relay.join(timeout=idle + 5)
    assert target.tasks[:1] == ["wake.up"]
    assert woke_after < 2.0  # a NOTIFY, not the 30 s wait, on PostgreSQL


def test_relays_listen_on_postgresql_and_poll_behind_pgbouncer(
    odb: Database, backend_name: str, backend_url: str
) -> None:
    from flask_uow.outbox._wake import waiter_for

    waiter = waiter_for(odb.engine, threading.Event())
    try:
        expected = "poll"
        if backend_name == "postgresql" and ":6432/" not in backend_url:
            expected = "listen"
        assert waiter.kind == expected
    finally:
        waiter.close()


def test_the_immediate_lane_marks_published_messages_off_the_committing_thread(
    odb: Database,
) -> None:
    odb.outbox.publish_with(Collector())
    with statements(odb.engine) as sent, odb.unit_of_work():
        odb.enqueue("mail.send")
    assert not [statement for statement in sent if statement.startswith("UPDATE")]
    odb.outbox.flush()
    table = odb.outbox.tables.outbox
    with odb.engine.connect() as connection:
        published_at = connection.scalar(sa.select(table.c.published_at))
    assert published_at is not None
