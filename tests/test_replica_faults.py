"""Replicas that stop answering, and writes committed inside a unit reading a replica.

On the real streaming replica (``TEST_REPLICA_URL``). A replica that stops answering is
made with a TCP proxy of the test's own in front of it (``TcpProxy.freeze()``): the shared
replica keeps running for everyone else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from flask_uow import Database, Propagation, UnitOfWorkError
from flask_uow._engines import ReadChoice
from flask_uow._replicas import Replicas

from . import test_replicas
from .models import Base, Item
from .reliability._proxy import TcpProxy
from .test_replicas import REPLICA_PORT, add, make_db, paused_replay, poll, read

replica_admin = test_replicas.replica_admin  # the fixture: an autocommit engine on the replica

pytestmark = pytest.mark.serial  # they pause replay on the one shared replica


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A proxy in front of the replica that the test can freeze."""
    with TcpProxy(REPLICA_PORT) as started:
        yield started


@pytest.fixture
def silenceable(
    primary_url: str, replica_url: str, replica_admin: sa.Engine, proxy: TcpProxy
) -> Iterator[Database]:
    """A Database whose one replica is reached through ``proxy``."""
    through_proxy = make_url(replica_url).set(port=proxy.port)
    replicas = Replicas([through_proxy], probe_interval=0.02, backoff=30.0, answer_timeout=1.0)
    database = Database(primary_url, metadata=Base.metadata, replicas=replicas)
    database.drop_all()
    database.create_all()
    caught_up(database, replica_admin)
    yield database
    proxy.restore()
    database.drop_all()
    database.dispose()


def caught_up(db: Database, admin: sa.Engine) -> None:
    """Wait until the replica has replayed everything the primary wrote so far."""
    with db.engine.connect() as primary:
        target = primary.scalar(sa.text("SELECT pg_current_wal_insert_lsn()"))
    with admin.connect() as connection:
        poll(
            lambda: connection.scalar(
                sa.text("SELECT pg_last_wal_replay_lsn() >= CAST(:target AS pg_lsn)"),
                {"target": target},
            ),
            what="the replica to replay the primary's writes",
        )


def finished_within(seconds: float, function: Callable[[], object]) -> object:
    """Run ``function`` in a thread; fail if it has not returned after ``seconds``."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    assert results, "the thread raised"
    return results[0]


def test_a_replica_that_stops_answering_sends_read_only_units_to_the_primary_in_seconds(
    silenceable: Database, proxy: TcpProxy
) -> None:
    add(silenceable, "kept")
    assert read(silenceable) == (REPLICA_PORT, ["kept"])
    proxy.freeze()  # connections stay open; nothing comes back
    time.sleep(0.05)  # the cached replay position is older than probe_interval: probe again
    try:
        started = time.monotonic()
        assert finished_within(10, lambda: read(silenceable)) == (5432, ["kept"])
        assert time.monotonic() - started < 4  # the probe's 2 s, not the partition's length
        assert finished_within(10, lambda: read(silenceable)) == (5432, ["kept"])
    finally:
        proxy.restore()
    assert silenceable.replicas is not None
    assert silenceable.replicas.stats.marked_down == 1


def test_a_replica_that_goes_down_after_it_was_chosen_leaves_the_unit_on_the_primary(
    silenceable: Database, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(silenceable, "kept")
    assert read(silenceable) == (REPLICA_PORT, ["kept"])  # a live connection in its pool
    replicas = silenceable.replicas
    assert replicas is not None
    choose = replicas.engine_for_read

    def chosen_then_cut(*args: Any, **kwargs: Any) -> ReadChoice:
        choice = choose(*args, **kwargs)
        if choice.engine is not None:
            proxy.cut()  # down between its probe and the unit's connection: pooled one closed
        return choice

    monkeypatch.setattr(replicas, "engine_for_read", chosen_then_cut)
    try:
        assert read(silenceable) == (5432, ["kept"])
    finally:
        proxy.restore()
    stats = replicas.stats
    assert (stats.marked_down, stats.reads_on_replicas, stats.fallbacks_to_primary) == (1, 1, 1)


def test_a_replica_silent_mid_unit_fails_it_after_answer_timeout_and_the_retry_reads_the_primary(
    silenceable: Database, proxy: TcpProxy
) -> None:
    add(silenceable, "kept")
    ports: list[int] = []

    @silenceable.transactional(read_only=True, retries=1)
    def two_reads() -> None:
        session = silenceable.session
        ports.append(session.scalar(sa.text("SELECT inet_server_port()")))
        if len(ports) == 1:
            proxy.freeze()
        assert session.scalars(sa.select(Item.name)).all() == ["kept"]

    try:
        started = time.monotonic()
        finished_within(10, two_reads)
        assert time.monotonic() - started < 4  # answer_timeout (1 s), then the primary
    finally:
        proxy.restore()
    assert ports == [REPLICA_PORT, 5432]


@pytest.fixture
def patient(primary_url: str, replica_url: str, replica_admin: sa.Engine) -> Iterator[Database]:
    """A Database with the replica, whose reads wait up to 5 s for their causal position."""
    database = make_db(primary_url, replica_url, max_wait=5.0)
    database.drop_all()
    database.create_all()
    caught_up(database, replica_admin)
    yield database
    database.drop_all()
    database.dispose()


def resume_replay(admin: sa.Engine) -> None:
    with admin.connect() as connection:
        connection.execute(sa.text("SELECT pg_wal_replay_resume()"))


def names_and_port(db: Database) -> tuple[int, list[str]]:
    session = db.session
    port = session.scalar(sa.text("SELECT inet_server_port()"))
    assert port is not None
    return port, list(session.scalars(sa.select(Item.name).order_by(Item.name)))


def test_a_write_committed_inside_a_read_only_unit_is_seen_by_its_next_statement_on_the_replica(
    patient: Database, replica_admin: sa.Engine
) -> None:
    add(patient, "before")
    caught_up(patient, replica_admin)
    with paused_replay(replica_admin):
        with patient.unit_of_work(read_only=True):
            assert names_and_port(patient) == (REPLICA_PORT, ["before"])
            with patient.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                patient.session.add(Item(name="inside"))
            resuming = threading.Timer(0.2, resume_replay, args=(replica_admin,))
            resuming.start()
            try:
                # Waits for the replica to replay the inner unit's commit, then reads.
                assert names_and_port(patient) == (REPLICA_PORT, ["before", "inside"])
            finally:
                resuming.join()


def test_a_write_inside_a_read_only_unit_the_replica_cannot_replay_in_max_wait_fails_loudly(
    primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    db = make_db(primary_url, replica_url, max_wait=0.2)
    db.drop_all()
    db.create_all()
    caught_up(db, replica_admin)
    try:
        add(db, "before")
        caught_up(db, replica_admin)
        with paused_replay(replica_admin):
            with pytest.raises(UnitOfWorkError, match="has not replayed") as raised:
                with db.unit_of_work(read_only=True):
                    assert names_and_port(db) == (REPLICA_PORT, ["before"])
                    with db.unit_of_work(propagation=Propagation.REQUIRES_NEW):
                        db.session.add(Item(name="inside"))
                    names_and_port(db)
            assert "read_only=False" in str(raised.value)
    finally:
        db.drop_all()
        db.dispose()


def test_a_replica_silent_when_a_read_only_unit_ends_holds_it_no_longer_than_answer_timeout(
    silenceable: Database, proxy: TcpProxy
) -> None:
    add(silenceable, "kept")

    def read_then_freeze() -> None:
        with silenceable.unit_of_work(read_only=True):
            assert silenceable.session.scalar(sa.text("SELECT inet_server_port()")) == REPLICA_PORT
            proxy.freeze()  # the unit's COMMIT (psycopg read-only units end with one) is lost

    try:
        started = time.monotonic()
        finished_within(10, read_then_freeze)
        assert time.monotonic() - started < 4  # answer_timeout (1 s)
        assert finished_within(10, lambda: read(silenceable)) == (5432, ["kept"])
    finally:
        proxy.restore()
