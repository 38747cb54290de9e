"""The outbox under kills: every committed unit's message has its effect exactly once.

Real processes, a real broker, real kills. A producer app, relays and a Celery worker
(``UnitTask``) run as subprocesses on the backend under test and RabbitMQ. Faults, in turn:

- the app is SIGKILLed right after a unit's COMMIT, before it publishes;
- a relay is SIGKILLed after its batch reached the broker, before marking it;
- one of two relays is SIGKILLed in the middle of a batch;
- a relay's database connection is killed by the server during a claim (servers only);
- the worker is SIGKILLed in the middle of a task (the message is redelivered);
- RabbitMQ is stopped (``rabbitmqctl stop_app``) while units commit, then started again:
  neither the immediate lane nor the relay can publish until it is back. RabbitMQ is
  shared by this machine's test runs, which is one more reason this test is ``serial``;
  the outage lasts a few seconds and ``start_app`` always runs. The quick mode stops it
  on SQLite only (a few seconds per backend), ``make stress`` on every backend. Where
  ``rabbitmqctl`` cannot control the broker (not installed, no rights) this fault is
  skipped, except under CI, which fails.

It runs on PgBouncer too (transaction pooling: relays poll instead of LISTEN, and a
connection killed during a claim is the server's, behind the pooler).

Checks: the effects (rows the consumer inserted) are exactly the committed units' messages,
once each; nothing of a rolled-back unit or savepoint arrives; messages of one key take
effect in commit order; nothing is left pending or leased. Quick in ``make test``, bigger
under ``make stress``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_uow import Database

from ..outbox_support import drop_database, make_database, require_broker, thing
from ._scale import STRESS, scaled
from .outbox_chaos_app import BROKER_URL, produced

pytestmark = pytest.mark.serial  # real Celery workers on the one shared RabbitMQ: one at a time


ROOT = Path(__file__).resolve().parents[2]


require_broker(BROKER_URL)


class Processes:
    """The subprocesses of one test, all killed at its end."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.env = {
            **os.environ,
            "OUTBOX_TEST_DATABASE_URL": url,
            "OUTBOX_TEST_QUEUE": queue,
            "OUTBOX_TEST_BROKER_URL": BROKER_URL,
            "OUTBOX_TEST_SLOW_SECONDS": "3",
            "PYTHONPATH": str(ROOT),
        }
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.started.append(process)
        return process

    def chaos(self, *args: str) -> subprocess.Popen[str]:
        return self.start("-m", "tests.reliability.outbox_chaos_app", *args)

    def worker(self) -> subprocess.Popen[str]:
        return self.start(
            "-m", "celery", "-A", "tests.outbox_celery_app", "worker", "--pool", "solo",
            "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "ERROR",
        )  # fmt: skip

    def produce(self, start: int, count: int, kill_at: int = -1) -> int:
        process = self.chaos("produce", self.url, self.queue, str(start), str(count), str(kill_at))
        process.communicate(timeout=120)
        return process.returncode

    def relay(self, fault: str = "none") -> subprocess.Popen[str]:
        process = self.chaos("relay", self.url, self.queue, fault)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "relaying"
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.fixture
def odb(backend_url: str) -> Iterator[Database]:
    database = make_database(backend_url)
    yield database
    drop_database(database)


@pytest.fixture
def processes(backend_url: str, odb: Database) -> Iterator[Processes]:
    from kombu.connection import Connection
    from kombu.entity import Queue

    queue = f"flask-uow-chaos-{uuid.uuid4().hex[:10]}"
    started = Processes(backend_url, queue)
    yield started
    started.stop_all()
    with Connection(BROKER_URL) as connection:
        Queue(queue, channel=connection.channel()).delete()


def effects(odb: Database) -> list[str]:
    """Rows the consumer inserted, in the order its units committed."""
    with odb.engine.connect() as connection:
        return list(connection.scalars(sa.select(thing.c.name).order_by(thing.c.id)))


def committed_units(odb: Database) -> set[str]:
    with odb.engine.connect() as connection:
        return set(connection.scalars(sa.select(produced.c.name)))


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False
    )


@functools.cache
def broker_controllable() -> bool:
    """Whether ``rabbitmqctl`` can stop and start this machine's RabbitMQ (CI requires it)."""
    if shutil.which("rabbitmqctl") is not None and rabbitmqctl("status").returncode == 0:
        return True
    if os.environ.get("CI") == "true":
        raise AssertionError(
            "rabbitmqctl cannot reach this machine's RabbitMQ node (not installed, or run "
            "without the rights to its Erlang cookie): CI runs the broker-outage fault, so "
            "run the tests as the user that can run 'rabbitmqctl status'."
        )
    return False


@contextmanager
def broker_stopped() -> Iterator[None]:
    """RabbitMQ's app stopped for the block (the node keeps running), started again after."""
    stopped = rabbitmqctl("stop_app")
    try:
        assert stopped.returncode == 0, stopped.stderr
        yield
    finally:
        started = rabbitmqctl("start_app")
        assert started.returncode == 0, started.stderr
        require_broker(BROKER_URL)


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting {seconds} s for {what}")
        time.sleep(0.1)


def test_every_committed_message_has_its_effect_exactly_once_under_kills(
    odb: Database,
    processes: Processes,
    request: pytest.FixtureRequest,
    figures: dict[str, Any],
) -> None:
    backend_name = request.node.callspec.params["backend_url"]  # pgbouncer apart
    units = scaled(12, 120)
    kills: Counter[str] = Counter()
    worker = processes.worker()

    # 1. The app dies right after a COMMIT, before publishing that unit's message.
    kill_at = units // 3
    assert processes.produce(0, units, kill_at=kill_at) == -signal.SIGKILL
    kills["app after COMMIT"] += 1
    assert f"u{kill_at}" in committed_units(odb)

    # 2. A relay dies after the broker confirmed its batch, before marking it.
    relay = processes.relay("after-publish")
    assert relay.wait(timeout=60) == -signal.SIGKILL
    kills["relay after publish"] += 1

    # 3. Two relays; the one that claims first dies in the middle of its batch.
    crashing = processes.relay("mid-batch")
    steady = processes.relay("late")
    assert processes.produce(units, units) == 0
    assert crashing.wait(timeout=60) == -signal.SIGKILL
    kills["one of two relays mid-batch"] += 1

    # 4. The server kills a relay's connection during its claim; that relay carries on.
    if backend_name != "sqlite":
        claimed = processes.relay("claim")
        assert claimed.stdout is not None
        assert claimed.stdout.readline().strip() == "killed the claim's connection"
        kills["database connection during a claim"] += 1

    # 5. The worker dies in the middle of a task; a new worker gets the message again.
    with odb.unit_of_work():
        odb.enqueue("outbox_tests.record", "slow-1")
        odb.session.execute(sa.insert(produced).values(name="slow-1"))
    wait_until(lambda: odb.outbox.pending() == 0, 30, "slow-1 to be published")
    time.sleep(1.5)  # the worker is inside the task now
    worker.kill()
    worker.wait()
    kills["worker mid-task"] += 1
    processes.worker()

    # 6. RabbitMQ stops while units commit; the relay publishes them once it is back.
    outage_units = 0
    if (STRESS or backend_name == "sqlite") and broker_controllable():
        with broker_stopped():
            outage_units = scaled(4, 60)
            assert processes.produce(2 * units, outage_units) == 0
            assert committed_units(odb) >= {f"u{2 * units + n}" for n in range(outage_units)}
            assert odb.outbox.pending() >= outage_units  # nothing could be published
        kills["RabbitMQ stopped while units commit"] += 1
        # The worker reconnects on Celery's own backoff (2 s, 4 s, ... up to 30 s): a second
        # one, started now, consumes meanwhile (each message still takes effect once).
        processes.worker()

    expected = committed_units(odb)
    wait_until(
        lambda: odb.outbox.pending() == 0 and set(effects(odb)) >= expected,
        90,
        "every committed message to take effect",
    )
    time.sleep(1.0)  # late duplicates, if any, would land now
    steady.send_signal(signal.SIGTERM)
    assert steady.wait(timeout=30) == 0

    done = effects(odb)
    counted = Counter(done)
    duplicates = {name: count for name, count in counted.items() if count > 1}
    assert duplicates == {}
    assert set(done) == expected
    assert not [name for name in done if name.startswith(("savepoint-", "rolled-back-"))]
    for key in range(3):  # odd units carry key k{n % 3}: effects in commit order
        keyed = [int(name[1:]) for name in done if name[0] == "u" and int(name[1:]) % 2
                 and int(name[1:]) % 3 == key]  # fmt: skip
        assert keyed == sorted(keyed)
    status = odb.outbox.status()
    assert (status.pending, status.leased, status.parked) == (0, 0, 0)
    inbox = odb.outbox.tables.inbox
    with odb.engine.connect() as connection:
        processed = connection.scalar(sa.select(sa.func.count()).select_from(inbox))
    assert processed == len(expected)
    figures.update(
        backend=backend_name,
        committed_units=len(expected),
        effects=len(done),
        duplicates=len(duplicates),
        kills=dict(kills),
        units_committed_with_rabbitmq_stopped=outage_units,
    )
    print(
        f"\n{backend_name}: {len(expected)} committed, {len(done)} effects, "
        f"{outage_units} committed with RabbitMQ stopped, faults {dict(kills)}"
    )
