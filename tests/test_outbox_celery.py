"""Publishing to Celery on RabbitMQ, and consuming exactly once with ``UnitTask``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message as KombuMessage

from flask_uow import Database
from flask_uow.celery import UnitTask
from flask_uow.outbox import Message
from flask_uow.outbox._targets import CeleryTarget

from .outbox_support import drop_database, make_database, require_broker, thing

pytestmark = pytest.mark.serial  # real Celery workers on the one shared RabbitMQ: one at a time


BROKER_URL = os.environ.get("OUTBOX_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
ROOT = Path(__file__).resolve().parent.parent


require_broker(BROKER_URL)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own on the shared RabbitMQ, deleted afterwards."""
    name = f"flask-uow-outbox-{uuid.uuid4().hex[:10]}"
    yield name
    with Connection(BROKER_URL) as connection:
        Queue(name, channel=connection.channel()).delete()


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    target = database.outbox.target
    drop_database(database)  # closes the target's confirming connection to RabbitMQ too
    if isinstance(target, CeleryTarget):
        target.app.close()


def producer_app(queue: str) -> Celery:
    app = Celery("outbox_producer", broker=BROKER_URL)
    app.conf.task_default_queue = queue
    return app


@pytest.fixture
def relay_target(odb: Database, queue: str) -> CeleryTarget:
    """``odb`` publishing to ``queue`` through relays only: its Celery target."""
    odb.outbox.publish_with(producer_app(queue), immediate=False)
    target = odb.outbox.target
    assert isinstance(target, CeleryTarget)
    return target


def read_queue(queue: str, count: int) -> list[KombuMessage]:
    received: list[KombuMessage] = []
    with Connection(BROKER_URL) as connection:
        simple = connection.SimpleQueue(queue)
        for _ in range(count):
            message = simple.get(timeout=10)
            message.ack()
            received.append(message)
        simple.close()
    return received


def read_rest(queue: str) -> list[KombuMessage]:
    """What is left on ``queue`` (what arrives within a second of the last one)."""
    received: list[KombuMessage] = []
    with Connection(BROKER_URL) as connection:
        simple = connection.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                break
            message.ack()
            received.append(message)
        simple.close()
    return received


def test_messages_reach_rabbitmq_with_the_message_id_as_the_task_id(
    odb: Database, queue: str
) -> None:
    app = producer_app(queue)
    odb.outbox.publish_with(app)
    assert app.conf.broker_transport_options["confirm_publish"] is True
    with odb.unit_of_work():
        message_id = odb.enqueue("outbox_tests.record", "a")
    assert odb.outbox.pending() == 0  # confirmed by the broker, marked published
    (received,) = read_queue(queue, 1)
    assert received.headers["id"] == message_id
    assert received.headers["task"] == "outbox_tests.record"
    args, kwargs, _ = received.decode()
    assert (args, kwargs) == (["a"], {})


def test_dispose_closes_the_confirming_connection_and_the_next_unit_publishes_on_a_new_one(
    odb: Database, queue: str
) -> None:
    app = producer_app(queue)
    opened: list[Connection] = []
    connection_for_write = app.connection_for_write

    def recording(*args: object, **kwargs: object) -> Connection:
        connection: Connection = connection_for_write(*args, **kwargs)
        opened.append(connection)
        return connection

    app.connection_for_write = recording
    odb.outbox.publish_with(app)
    with odb.unit_of_work():
        first = odb.enqueue("outbox_tests.record", "before")
    odb.outbox.flush()
    confirming = [connection for connection in opened if connection.connected]
    assert len(confirming) == 1  # the immediate lane's, kept open between units

    odb.dispose()

    assert not confirming[0].connected
    with odb.unit_of_work():
        second = odb.enqueue("outbox_tests.record", "after")
    assert odb.outbox.pending() == 0  # confirmed by the broker on a new connection
    assert [message.headers["id"] for message in read_queue(queue, 2)] == [first, second]


def test_an_unreachable_broker_leaves_the_message_for_the_relay_and_the_caller_unharmed(
    odb: Database,
) -> None:
    app = Celery("outbox_down", broker="amqp://guest:guest@127.0.0.1:1//")
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {"max_retries": 0}
    odb.outbox.publish_with(app)
    started = time.monotonic()
    with odb.unit_of_work():
        odb.enqueue("outbox_tests.record", "lost?")
    assert time.monotonic() - started < 10
    status = odb.outbox.status()
    assert status.pending == 1


@pytest.fixture
def worker(backend_url: str, queue: str, odb: Database) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (solo pool) consuming ``queue`` with the tests' UnitTask."""
    yield from _worker(backend_url, queue, {})


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    return tmp_path / "worker_spans.jsonl"


@pytest.fixture
def traced_worker(
    backend_url: str, queue: str, odb: Database, spans_file: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """As ``worker``, tracing its tasks with opentelemetry-instrumentation-celery into
    ``spans_file``."""
    yield from _worker(backend_url, queue, {"OUTBOX_TEST_SPANS_FILE": str(spans_file)})


def _worker(
    backend_url: str, queue: str, extra: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "OUTBOX_TEST_DATABASE_URL": backend_url,
        "OUTBOX_TEST_QUEUE": queue,
        "OUTBOX_TEST_BROKER_URL": BROKER_URL,
        **extra,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.outbox_celery_app",
            "worker",
            "--pool",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield process
    process.kill()  # its messages are acknowledged; a warm shutdown takes seconds
    process.wait()
    assert process.stderr is not None
    process.stderr.close()


def wait_for_rows(odb: Database, count: int, seconds: float = 30.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        with odb.engine.connect() as connection:
            names = sorted(connection.scalars(sa.select(thing.c.name)))
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(0.1)


def test_a_unit_task_worker_has_each_message_s_effect_once_even_when_it_is_delivered_twice(
    odb: Database, queue: str, worker: subprocess.Popen[bytes]
) -> None:
    app = producer_app(queue)
    odb.outbox.publish_with(app)
    with odb.unit_of_work():
        first = odb.enqueue("outbox_tests.record", "first")
    assert wait_for_rows(odb, 1) == ["first"]
    target = odb.outbox.target
    assert target is not None
    duplicate = Message(id=first, task="outbox_tests.record", args=["first"], kwargs={})
    assert target([duplicate, duplicate]) == []  # a relay that published it twice more
    with odb.unit_of_work():
        odb.enqueue("outbox_tests.record", "second")
    assert wait_for_rows(odb, 2) == ["first", "second"]
    time.sleep(0.3)
    assert wait_for_rows(odb, 3, seconds=0) == ["first", "second"]
    inbox = odb.outbox.tables.inbox
    with odb.engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(inbox)) == 2


def test_the_workers_span_joins_the_producers_trace_through_celerys_instrumentation(
    odb: Database, queue: str, traced_worker: subprocess.Popen[bytes], spans_file: Path
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    odb.outbox.publish_with(producer_app(queue))
    tracer = TracerProvider().get_tracer("producer")
    with tracer.start_as_current_span("POST /orders") as request_span, odb.unit_of_work():
        odb.enqueue("outbox_tests.record", "traced")
    assert wait_for_rows(odb, 1) == ["traced"]
    deadline = time.monotonic() + 30
    runs: list[dict[str, str]] = []
    while not runs and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = spans_file.read_text().splitlines() if spans_file.exists() else []
        runs = [span for span in map(json.loads, lines) if span["name"].startswith("run/")]

    (run,) = runs
    assert run["name"] == "run/outbox_tests.record"
    context = request_span.get_span_context()
    assert run["trace_id"] == format(context.trace_id, "032x")
    assert run["parent_id"] == format(context.span_id, "016x")


class _Transient(Exception):
    """Stands for the driver error of a deadlock."""

    sqlstate = "40P01"


def test_a_transient_database_error_retries_the_task_through_celery(odb: Database) -> None:
    app = Celery("outbox_eager")
    app.conf.task_always_eager = True
    odb.outbox.publish_with(app)
    calls: list[int] = []

    @app.task(base=UnitTask, name="outbox_tests.flaky", bind=True, retry_backoff_seconds=0)
    def flaky(self: UnitTask, name: str) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("UPDATE", {}, _Transient())
        odb.session.execute(sa.insert(thing).values(name=name))
        return name

    assert flaky.apply(args=["retried"]).get() == "retried"
    assert len(calls) == 2
    assert wait_for_rows(odb, 1, seconds=0) == ["retried"]


def test_a_unit_task_called_with_the_same_task_id_twice_runs_once(odb: Database) -> None:
    app = Celery("outbox_eager_once")
    app.conf.task_always_eager = True
    odb.outbox.publish_with(app)

    @app.task(base=UnitTask, name="outbox_tests.once")
    def once(name: str) -> str:
        odb.session.execute(sa.insert(thing).values(name=name))
        return name

    task_id = str(uuid.uuid4())
    assert once.apply(args=["x"], task_id=task_id).get() == "x"
    assert once.apply(args=["x"], task_id=task_id).get() is None
    assert wait_for_rows(odb, 1, seconds=0) == ["x"]


def test_a_relay_batch_to_rabbitmq_is_confirmed_as_a_whole_and_every_message_arrives(
    odb: Database, queue: str
) -> None:
    app = producer_app(queue)
    odb.outbox.publish_with(app, immediate=False)
    target = odb.outbox.target
    assert getattr(target, "confirming", None) is not None  # pipelined publisher confirms
    with odb.unit_of_work():
        ids = [odb.enqueue("outbox_tests.record", f"n{number}") for number in range(50)]
    odb.outbox.batch_size = 50
    assert odb.outbox.relay_once() == 50
    received = read_queue(queue, 50)
    assert [message.headers["id"] for message in received] == ids


def test_a_relay_declares_each_queue_it_routes_to_on_its_confirming_channel(
    odb: Database, queue: str
) -> None:
    other = f"{queue}-other"
    app = producer_app(queue)
    odb.outbox.publish_with(app, immediate=False)
    try:
        for batch in range(2):  # the second batch finds both queues declared already
            with odb.unit_of_work():
                default = odb.enqueue("outbox_tests.record", f"default {batch}")
                routed = odb.outbox.enqueue("outbox_tests.record", args=[batch], queue=other)
            assert odb.outbox.relay_once() == 2
            assert [message.headers["id"] for message in read_queue(queue, 1)] == [default]
            assert [message.headers["id"] for message in read_queue(other, 1)] == [routed]
    finally:
        with Connection(BROKER_URL) as connection:
            Queue(other, channel=connection.channel()).delete()


def test_a_connection_lost_mid_batch_fails_its_unconfirmed_messages_at_once_for_the_next_batch(
    odb: Database, queue: str, relay_target: CeleryTarget
) -> None:
    odb.outbox.retry_base_seconds = 0.0
    target = relay_target
    send = target._send
    sent: list[str] = []

    def cut_before_the_third(message: Message, producer: object, **options: object) -> None:
        if len(sent) == 2:  # the broker connection drops in the middle of the batch
            producer.channel.connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        sent.append(message.id)
        send(message, producer, **options)

    target._send = cut_before_the_third  # type: ignore[method-assign]
    with odb.unit_of_work():
        ids = [odb.enqueue("outbox_tests.record", f"n{number}") for number in range(5)]
    started = time.monotonic()
    first = odb.outbox.relay_once()
    assert time.monotonic() - started < 10  # not kombu reconnecting and waiting for lost acks
    assert first < 3
    assert odb.outbox.pending() == 5 - first
    target._send = send  # type: ignore[method-assign]
    while odb.outbox.relay_once():
        pass
    assert odb.outbox.pending() == 0
    received = [message.headers["id"] for message in read_queue(queue, 5)]
    received += [message.headers["id"] for message in read_rest(queue)]
    assert set(received) == set(ids)  # the ones sent before the cut were unconfirmed: again
    assert len(received) <= 5 + 2


def test_a_message_after_a_relay_batch_is_confirmed_without_waiting_on_the_batch_s_packets(
    odb: Database, queue: str, relay_target: CeleryTarget
) -> None:
    target = relay_target
    with odb.unit_of_work():
        for number in range(20):
            odb.enqueue("outbox_tests.record", f"n{number}")
    assert odb.outbox.relay_once() == 20
    took = []
    for number in range(5):  # one message at a time, as the immediate lane sends them
        message = Message(str(uuid.uuid4()), "outbox_tests.record", args=[number], kwargs={})
        started = time.monotonic()
        assert target([message]) == []
        took.append(time.monotonic() - started)
    assert sorted(took)[2] < 0.1  # a socket left corked would hold each one about 200 ms
    assert len(read_queue(queue, 25)) == 25


def test_a_confirming_connection_that_died_while_idle_is_replaced_and_the_batch_goes_out(
    odb: Database, queue: str, relay_target: CeleryTarget
) -> None:
    target = relay_target
    send = target._send
    producers: list[object] = []

    def noting(message: Message, producer: object, **options: object) -> None:
        producers.append(producer)
        send(message, producer, **options)

    target._send = noting  # type: ignore[method-assign]
    with odb.unit_of_work():
        odb.enqueue("outbox_tests.record", "before")
    assert odb.outbox.relay_once() == 1
    producers[0].channel.connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
    with odb.unit_of_work():
        ids = [odb.enqueue("outbox_tests.record", f"after {number}") for number in range(3)]
    assert odb.outbox.relay_once() == 3  # on a new connection, not left for a later retry
    assert odb.outbox.pending() == 0
    assert [message.headers["id"] for message in read_queue(queue, 4)][1:] == ids
