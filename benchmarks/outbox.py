"""What the transactional outbox costs with RabbitMQ (``OUTBOX_BENCH_BROKER_URL``): a unit
enqueueing a message beside one publishing after COMMIT with Celery's ``send_task`` and no
confirms; units per second end to end; commit-to-broker latency by lane; relays draining a
backlog (PostgreSQL)."""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import threading
import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from celery import Celery

from flask_uow import Database
from flask_uow.outbox import Message

from ._common import backends, cli, markdown_table

BROKER_URL = os.environ.get("OUTBOX_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PLAIN = "insert + on_commit send_task (no confirm)"


Settings = namedtuple("Settings", "rounds seconds latency_units backlog")  # rounds: unused
FULL = Settings(rounds=1, seconds=3.0, latency_units=500,
                backlog=int(os.environ.get("OUTBOX_BENCH_BACKLOG", "100000")))
"""``OUTBOX_BENCH_BACKLOG`` shrinks the relays' backlog for a quicker run (report it)."""
QUICK = Settings(rounds=1, seconds=0.3, latency_units=50, backlog=2_000)


@contextlib.contextmanager
def scene(url: sa.URL) -> Iterator[tuple[Database, sa.Table]]:
    """A Database with the outbox's table and a row table, both dropped after."""
    metadata = sa.MetaData()
    table = sa.Table("bench_outbox_row", metadata, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("name", sa.String(50)))
    db = Database(url.render_as_string(hide_password=False), metadata=metadata)
    db.outbox  # noqa: B018 - adds the outbox's table to the metadata
    db.drop_all()
    db.create_all()
    try:
        yield db, table
    finally:
        db.outbox.flush()
        db.drop_all()
        db.dispose()


@contextlib.contextmanager
def queue() -> Iterator[str]:
    """A queue name of our own; the queue is deleted after, if anything declared it."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        with celery_app(name, confirm=False).connection_for_write() as connection:
            with contextlib.suppress(Exception):  # never declared: nothing was published to it
                connection.channel().queue_delete(name)


def celery_app(queue: str, *, confirm: bool) -> Celery:
    app = Celery("bench", broker=BROKER_URL)
    app.conf.task_default_queue = queue
    app.conf.broker_transport_options = {"confirm_publish": confirm}
    return app


def per_second(run: Callable[[], None], seconds: float, drain: Any = None, warmup: int = 0
               ) -> float:
    """Calls of ``run`` per second over about ``seconds`` after ``warmup`` calls, counted
    until ``drain()`` (if given) returns."""
    for _ in range(warmup):
        run()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run()
        count += 1
    if drain is not None:
        drain()
    return count / (time.perf_counter() - started)


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The statements ``db``'s engine sends inside the block."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(args[2])

    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)


def units(db: Database, table: sa.Table, plain_app: Celery) -> dict[str, Callable[[], None]]:
    """A unit inserting a row alone, then enqueueing a message, then publishing after COMMIT."""
    counter = iter(range(10**9))

    def insert() -> None:
        db.session.execute(sa.insert(table).values(name=f"n{next(counter)}"))

    def insert_only() -> None:
        with db.unit_of_work():
            insert()

    def enqueue() -> None:
        with db.unit_of_work():
            insert()
            db.enqueue("bench.task", 1)

    def publish_after_commit() -> None:
        with db.unit_of_work() as uow:
            insert()
            uow.on_commit(lambda: plain_app.send_task("bench.task", args=[1]))

    return {"insert only": insert_only, "enqueue": enqueue, PLAIN: publish_after_commit}


def unit_costs(url: sa.URL, seconds: float) -> dict[str, Any]:
    """Milliseconds and statements per unit of each way to publish; end-to-end units per second
    of publish-after-commit and of the immediate lane (counted until confirmed)."""
    out: dict[str, Any] = {"ms": {}}
    with scene(url) as (db, table), queue() as name:
        ops = units(db, table, celery_app(name, confirm=False))
        for label, op in (("insert only", ops["insert only"]),
                          ("insert + enqueue (no publisher: relay lane)", ops["enqueue"])):
            out["ms"][label] = 1e3 / per_second(op, seconds, warmup=20)
        for label in ("insert only", "enqueue"):
            with statements(db) as sent:
                ops[label]()
            out.setdefault("statements", {})[label] = len(sent)
        out["ms"][PLAIN] = 1e3 / per_second(ops[PLAIN], seconds, warmup=20)
        db.outbox.publish_with(celery_app(name, confirm=True))
        label = "insert + enqueue, immediate lane (confirm)"
        out["ms"][label] = 1e3 / per_second(ops["enqueue"], seconds, warmup=20)
    with scene(url) as (db, table), queue() as name:
        ops = units(db, table, celery_app(name, confirm=False))
        out["end_to_end"] = {PLAIN: per_second(ops[PLAIN], seconds)}
        db.outbox.publish_with(celery_app(name, confirm=True))
        out["end_to_end"]["immediate lane"] = per_second(ops["enqueue"], seconds, db.outbox.flush)
    return out


def latencies(url: sa.URL, count: int) -> dict[str, dict[str, float]]:
    """Commit-to-broker milliseconds, p50 and p99, one message in flight, by lane."""
    from flask_uow.outbox._targets import CeleryTarget, Failures

    committed_at: dict[str, float] = {}
    confirmed_at: dict[str, float] = {}

    class TimedCelery(CeleryTarget):
        def __call__(self, messages: list[Message]) -> Failures:
            failures = super().__call__(messages)
            now = time.perf_counter()
            confirmed_at.update((message.id, now) for message in messages)
            return failures

    def note_commit(session: Any) -> None:
        if session.get_nested_transaction() is None:
            now = time.perf_counter()
            committed_at.update((m, now) for m in session.info.get("flask_uow_outbox_ids", []))

    out = {}
    with scene(url) as (db, table), queue() as name:
        timed = TimedCelery(celery_app(name, confirm=True))
        sa.event.listen(db.session_class, "after_commit", note_commit)
        for lane in ("immediate", "relay"):
            committed_at.clear()
            confirmed_at.clear()
            db.outbox.publish_with(timed, immediate=lane == "immediate")
            stop = threading.Event()
            relay = threading.Thread(target=db.outbox.run_relay,
                                     kwargs={"stop": stop.is_set, "idle_seconds": 0.5})
            if lane == "relay":
                relay.start()
                time.sleep(0.5)
            for _ in range(count):
                with db.unit_of_work():
                    db.session.execute(sa.insert(table).values(name="x"))
                    message_id = db.enqueue("bench.task", 1)
                deadline = time.monotonic() + 5  # one message in flight at a time
                while message_id not in confirmed_at and time.monotonic() < deadline:
                    time.sleep(0.0002)
            stop.set()
            if lane == "relay":
                with db.unit_of_work():
                    db.enqueue("bench.wake", 1)
                relay.join()
            gaps = sorted(confirmed_at[m] - committed_at[m] for m in committed_at
                          if m in confirmed_at)
            out[lane] = {"p50": statistics.median(gaps) * 1e3,
                         "p99": gaps[int(len(gaps) * 0.99) - 1] * 1e3}
    return out


def drain(url: sa.URL, backlog: int) -> dict[str, Any]:
    """Messages per second and statements per message of 1 and 2 relays draining ``backlog``
    messages; the outbox table's size after publishing and cleaning."""
    out: dict[str, Any] = {"rates": {}}
    with scene(url) as (db, _):
        outbox = db.outbox
        outbox.batch_size = 500
        targets = ("no-op target", "Celery (RabbitMQ, confirms)")
        for target_name, relays in itertools.product(targets, (1, 2)):
            with queue() as name:
                for start in range(0, backlog, 1000):
                    with db.unit_of_work():
                        for number in range(start, min(backlog, start + 1000)):
                            db.enqueue("bench.task", number)
                celery = celery_app(name, confirm=True)
                outbox.publish_with(celery if "Celery" in target_name else _no_op, immediate=False)
                with statements(db) as sent:
                    started = time.perf_counter()
                    with ThreadPoolExecutor(relays) as pool:
                        list(pool.map(_drain_all, [db] * relays))
                    elapsed = time.perf_counter() - started
                assert outbox.pending() == 0
                out["rates"][f"{target_name}, {relays} relay(s)"] = {
                    "per_second": backlog / elapsed, "seconds": elapsed,
                    "statements_per_message": len(sent) / backlog}
                outbox.keep_published_seconds = 0
                while outbox.clean(limit=5000):
                    pass
                outbox.keep_published_seconds = 3600
        with db.engine.connect() as connection:
            size = connection.scalar(sa.text("SELECT pg_total_relation_size('flask_uow_outbox')"))
            rows = connection.scalar(sa.text("SELECT count(*) FROM flask_uow_outbox"))
        out["table_after"] = f"{rows} rows, {size / 1024:.0f} KiB"
    return out


def _no_op(messages: list[Message]) -> None:
    pass


def _drain_all(db: Database) -> None:
    while db.outbox.relay_once():
        pass


def run(settings: Settings, *, log: Callable[[str], None]) -> Any:
    results: dict[str, Any] = {"settings": settings._asdict(), "backends": {}}
    with backends() as urls:
        for backend, url in urls:
            log(f"outbox, {backend}: one unit, end to end, latency")
            out = unit_costs(url, settings.seconds)
            out["latency"] = latencies(url, settings.latency_units)
            if url.get_backend_name() == "postgresql":
                log(f"outbox, {backend}: relays draining {settings.backlog} messages")
                out["drain"] = drain(url, settings.backlog)
            results["backends"][backend] = out
    return results


def markdown(results: dict[str, Any]) -> str:
    parts = []
    for backend, data in results["backends"].items():
        ms, base = data["ms"], data["ms"][PLAIN]
        rows = [[name, f"{value:.3f}", f"{value / base:.2f}x"] for name, value in ms.items()]
        parts += [f"### {backend}\n", markdown_table(["unit", "ms per unit",
                                                      "/ publish-after-commit"], rows), ""]
        end, latency = data["end_to_end"], data["latency"]
        parts.append(f"Statements per unit: {data['statements']}. End to end: immediate lane "
                     f"{end['immediate lane']:.0f} units/s, publish-after-commit {end[PLAIN]:.0f}"
                     f" units/s. Commit to broker: " + "; ".join(
                         f"{lane} p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms"
                         for lane, v in latency.items()) + ".\n")
        if "drain" in data:
            rows = [[name, f"{r['per_second']:.0f}", f"{r['seconds']:.1f}",
                     f"{r['statements_per_message']:.3f}"]
                    for name, r in data["drain"]["rates"].items()]
            parts += [markdown_table(["relay draining a backlog", "messages/s", "seconds",
                                      "statements per message"], rows),
                      f"\nOutbox table after publishing and cleaning: "
                      f"{data['drain']['table_after']}.\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    cli(__doc__, run, markdown, FULL, QUICK)
