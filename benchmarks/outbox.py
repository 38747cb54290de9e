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

from . import _common as c
from ._common import backends

BROKER_URL = os.environ.get("OUTBOX_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
PLAIN = "insert + on_commit send_task (no confirm)"


Settings = namedtuple("Settings", "rounds seconds latency_units backlog")
FULL = Settings(rounds=7, seconds=1.0, latency_units=500,
                backlog=int(os.environ.get("OUTBOX_BENCH_BACKLOG", "100000")))
"""``seconds`` per contender and round; ``OUTBOX_BENCH_BACKLOG`` shrinks the relays' backlog
for a quicker run (report it)."""
QUICK = Settings(rounds=2, seconds=0.3, latency_units=50, backlog=2_000)

IMMEDIATE = "insert + enqueue, immediate lane (confirm)"
UNIT_TARGET, THROUGHPUT_TARGET, TWO_RELAYS_TARGET, DRAIN_TARGET = 1.10, 0.8, 1.6, 5000.0
LATENCY_TARGETS = {"immediate": (2.0, 20.0), "relay": (10.0, 50.0)}
"""Issue 20's targets: a unit that enqueues at most 1.10x one publishing after COMMIT;
end-to-end units/s at least 0.8x; commit-to-broker p50 / p99 ms by lane; a relay draining at
least 5,000 messages/s, two relays at least 1.6x one."""


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
    """One round: milliseconds and statements per unit of each way to publish; end-to-end
    units per second of publish-after-commit and of the immediate lane (counted until
    confirmed)."""
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
        out["ms"][IMMEDIATE] = 1e3 / per_second(ops["enqueue"], seconds, warmup=20)
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
            rounds = []
            for number in range(settings.rounds):
                log(f"outbox, {backend}: one unit, end to end, round {number + 1} of "
                    f"{settings.rounds}")
                rounds.append(unit_costs(url, settings.seconds))
            out: dict[str, Any] = {"rounds": rounds,
                                   "relay_woken": url.get_backend_name() == "postgresql"}
            log(f"outbox, {backend}: commit-to-broker latency")
            out["latency"] = latencies(url, settings.latency_units)
            if url.get_backend_name() == "postgresql":
                log(f"outbox, {backend}: relays draining {settings.backlog} messages")
                out["drain"] = drain(url, settings.backlog)
            results["backends"][backend] = out
    return results


def _series(data: dict[str, Any], kind: str, label: str) -> list[float]:
    return [round_[kind][label] for round_ in data["rounds"]]


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, issue 20's target with its measured figure, verdict)."""
    out = []
    for backend, data in results.get("backends", {}).items():
        where = f"outbox, {backend}"
        out.append(c.target(where, f"unit inserting and enqueueing, immediate lane <= "
                            f"{UNIT_TARGET:.2f}x publish-after-commit",
                            c.ratio_interval(_series(data, "ms", IMMEDIATE),
                                             _series(data, "ms", PLAIN)), UNIT_TARGET))
        counts = data["rounds"][0]["statements"]
        extra = counts["enqueue"] - counts["insert only"]
        out.append((where, f"statements a message adds to its unit <= 1: {extra}",
                    c.MET if extra <= 1 else c.MISSED))
        out.append(c.target(where, f"end-to-end units/s, immediate lane >= {THROUGHPUT_TARGET}x "
                            "publish-after-commit",
                            c.ratio_interval(_series(data, "end_to_end", "immediate lane"),
                                             _series(data, "end_to_end", PLAIN)),
                            THROUGHPUT_TARGET, at_least=True))
        for lane, (p50, p99) in LATENCY_TARGETS.items():
            if lane == "relay" and not data["relay_woken"]:
                continue  # the target is for a relay woken by LISTEN/NOTIFY, not a polling one
            got = data["latency"][lane]
            met = got["p50"] <= p50 and got["p99"] <= p99
            out.append((where, f"commit to broker, {lane} lane, p50 <= {p50:g} ms and p99 <= "
                        f"{p99:g} ms: p50 {got['p50']:.2f} ms, p99 {got['p99']:.2f} ms (one run)",
                        c.MET if met else c.MISSED))
        if "drain" in data:
            rates = data["drain"]["rates"]
            one, two = (rates[f"Celery (RabbitMQ, confirms), {n} relay(s)"]["per_second"]
                        for n in (1, 2))
            out.append((where, f"one relay drains >= {DRAIN_TARGET:,.0f} messages/s to RabbitMQ: "
                        f"{one:,.0f} (one run)", c.MET if one >= DRAIN_TARGET else c.MISSED))
            out.append((where, f"two relays >= {TWO_RELAYS_TARGET}x one: {two / one:.2f}x "
                        "(one run)", c.MET if two / one >= TWO_RELAYS_TARGET else c.MISSED))
    return out


def markdown(results: dict[str, Any]) -> str:
    parts = []
    for backend, data in results["backends"].items():
        labels = list(data["rounds"][0]["ms"])
        rows = [[name, f"{c.median(_series(data, 'ms', name)):.3f}",
                 c.ratio(_series(data, "ms", name), _series(data, "ms", PLAIN))]
                for name in labels]
        parts += [f"### {backend}\n", c.markdown_table(
            ["unit", "ms per unit (median of rounds)", "/ publish-after-commit [95% interval]"],
            rows), ""]
        latency = data["latency"]
        parts.append(
            f"Statements per unit: {data['rounds'][0]['statements']}. End to end (median of "
            f"rounds): immediate lane "
            f"{c.median(_series(data, 'end_to_end', 'immediate lane')):.0f} units/s, "
            f"publish-after-commit {c.median(_series(data, 'end_to_end', PLAIN)):.0f} units/s. "
            "Commit to broker: " + "; ".join(
                f"{lane} p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms"
                for lane, v in latency.items()) + ".\n")
        if "drain" in data:
            rows = [[name, f"{r['per_second']:.0f}", f"{r['seconds']:.1f}",
                     f"{r['statements_per_message']:.3f}"]
                    for name, r in data["drain"]["rates"].items()]
            parts += [c.markdown_table(["relay draining a backlog", "messages/s", "seconds",
                                        "statements per message"], rows),
                      f"\nOutbox table after publishing and cleaning: "
                      f"{data['drain']['table_after']}.\n"]
    return "\n".join([*parts, "### Outbox targets\n", c.targets_table(targets(results))]) + "\n"


if __name__ == "__main__":
    c.cli(__doc__, run, markdown, FULL, QUICK)
