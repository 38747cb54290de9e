"""Read replicas on a real PostgreSQL streaming replica (``scripts/replica.sh start``).

Where a unit ran is asked of the server itself (``inet_server_port()``: 5433 on the
replica). Lag is made for real by pausing WAL replay on the replica. These tests pause,
stop and restart the one shared replica: run them in one process (CI does), not split
over xdist workers that also use the replica.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, jsonify
from sqlalchemy import event

from flask_uow import CommitOutcomeUnknown, Database, UnitOfWorkWarning
from flask_uow._replicas import UNKNOWN_POSITION, Replicas, parse_token

from .models import Base, Item
from .reliability._http import Gunicorn, call

pytestmark = pytest.mark.serial  # they pause, stop and restart the one shared replica

REPLICA_PORT = 5433
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "replica.sh"


def poll(condition: Callable[[], bool], seconds: float = 20.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true, checking every 10 ms; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def replica_admin(replica_url: str) -> Iterator[sa.Engine]:
    """An autocommit engine on the replica, for pausing and resuming replay."""
    engine = sa.create_engine(replica_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    yield engine
    with engine.connect() as connection:  # never leave the shared replica paused
        connection.execute(sa.text("SELECT pg_wal_replay_resume()"))
    engine.dispose()


@contextmanager
def paused_replay(admin: sa.Engine) -> Iterator[None]:
    """Replay stopped on the replica: it keeps receiving WAL but applies none of it."""
    with admin.connect() as connection:
        connection.execute(sa.text("SELECT pg_wal_replay_pause()"))
        poll(
            lambda: connection.scalar(sa.text("SELECT pg_get_wal_replay_pause_state()"))
            == "paused",
            what="replay to pause",
        )
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT pg_wal_replay_resume()"))


def make_db(
    primary_url: str,
    replica_url: str,
    *,
    max_lag: float = 30.0,
    max_wait: float = 0.05,
    probe_interval: float = 0.02,
) -> Database:
    """A Database with the replica, quick to wait, probe and back off (tests run fast)."""
    replicas = Replicas(
        [replica_url],
        max_lag=max_lag,
        max_wait=max_wait,
        probe_interval=probe_interval,
        backoff=0.2,
    )
    return Database(primary_url, metadata=Base.metadata, replicas=replicas)


@pytest.fixture
def rdb(primary_url: str, replica_url: str, replica_admin: sa.Engine) -> Iterator[Database]:
    """A Database on the primary with the replica, fresh tables replayed on the replica."""
    database = make_db(primary_url, replica_url)
    database.drop_all()
    database.create_all()
    wait_for_table(replica_admin)
    yield database
    database.drop_all()
    database.dispose()


def wait_for_table(admin: sa.Engine) -> None:
    with admin.connect() as connection:
        poll(
            lambda: connection.scalar(sa.text("SELECT to_regclass('uow_item') IS NOT NULL")),
            what="the table to be replayed on the replica",
        )


def add(db: Database, name: str) -> None:
    with db.unit_of_work():
        db.session.add(Item(name=name))


def read(db: Database, after: str | None = None) -> tuple[int, list[str]]:
    """In a read-only unit: the port of the server it ran on, and the item names it saw."""
    with db.unit_of_work(read_only=True, after=after):
        port = db.session.scalar(sa.text("SELECT inet_server_port()"))
        names = list(db.session.scalars(sa.select(Item.name).order_by(Item.name)))
    assert port is not None
    return port, names


def in_fresh_thread(function: Callable[[], object]) -> object:
    """Run ``function`` in a new thread (a new causal scope) and return its result."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    thread.join()
    assert results, "the thread raised"
    return results[0]


# -- routing ---------------------------------------------------------------------------------


def test_read_only_units_run_on_the_replica_and_read_write_units_on_the_primary(
    rdb: Database,
) -> None:
    add(rdb, "written")
    port, names = read(rdb)
    assert port == REPLICA_PORT
    assert names == ["written"]
    with rdb.unit_of_work():
        assert rdb.session.scalar(sa.text("SELECT inet_server_port()")) != REPLICA_PORT
    assert rdb.replicas is not None and rdb.replicas.stats.reads_on_replicas == 1


def test_a_read_only_unit_joined_to_a_read_write_unit_runs_on_the_primary(rdb: Database) -> None:
    with rdb.unit_of_work():
        rdb.session.add(Item(name="pending"))
        with rdb.unit_of_work(read_only=True):
            assert rdb.session.scalar(sa.text("SELECT inet_server_port()")) != REPLICA_PORT
            assert rdb.session.scalars(sa.select(Item.name)).all() == ["pending"]


def test_a_serializable_read_only_unit_runs_on_the_primary_which_alone_allows_it(
    rdb: Database,
) -> None:
    with rdb.unit_of_work(read_only=True, isolation_level="SERIALIZABLE"):
        assert rdb.session.scalar(sa.text("SELECT inet_server_port()")) != REPLICA_PORT


def test_a_token_that_is_not_one_is_refused_with_the_fix(rdb: Database) -> None:
    with pytest.raises(ValueError, match=r"db\.causal_token\(\)"):
        rdb.unit_of_work(read_only=True, after="0/16B3748")


def test_a_thread_reads_its_own_write_while_replay_is_paused_and_others_read_the_replica(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    add(rdb, "before")
    read(rdb)  # replayed: the replica has "before"
    with paused_replay(replica_admin):
        add(rdb, "mine")
        assert read(rdb)[1] == ["before", "mine"]  # own write: never stale
        other = in_fresh_thread(lambda: read(rdb))
        assert other == (REPLICA_PORT, ["before"])  # another scope, within max lag
    assert rdb.replicas is not None and rdb.replicas.stats.fallbacks_to_primary >= 1


def test_a_token_carries_a_write_to_another_thread(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    with paused_replay(replica_admin):
        add(rdb, "job input")
        token = rdb.causal_token()
        assert parse_token(token) is not None
        assert in_fresh_thread(lambda: read(rdb, after=token)[1]) == ["job input"]
        assert in_fresh_thread(lambda: read(rdb)[1]) == []


def test_a_unit_waits_for_the_replica_to_replay_its_write_then_reads_there(
    primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    db = make_db(primary_url, replica_url, max_wait=20.0)
    db.drop_all()
    db.create_all()
    wait_for_table(replica_admin)
    replicas = db.replicas
    assert replicas is not None
    results: list[tuple[int, list[str]]] = []
    try:
        with paused_replay(replica_admin):
            add(db, "awaited")
            token = db.causal_token()
            reader = threading.Thread(target=lambda: results.append(read(db, after=token)))
            reader.start()
            poll(lambda: replicas.stats.waits == 1, what="the reader to wait")
        reader.join()
        assert results == [(REPLICA_PORT, ["awaited"])]
    finally:
        db.drop_all()
        db.dispose()


def test_a_replica_further_behind_than_max_lag_is_skipped(
    primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    db = make_db(primary_url, replica_url, max_lag=0.2)
    db.drop_all()
    db.create_all()
    wait_for_table(replica_admin)
    try:
        assert read(db)[0] == REPLICA_PORT
        with paused_replay(replica_admin):
            in_fresh_thread(lambda: add(db, "unreplayed"))  # leaves no causal position here
            poll(lambda: read(db)[0] != REPLICA_PORT, what="the lag to pass max_lag")
            assert read(db)[1] == ["unreplayed"]
        poll(lambda: read(db)[0] == REPLICA_PORT, what="reads to come back after replay")
    finally:
        db.drop_all()
        db.dispose()


def test_at_least_90_percent_of_read_only_units_run_on_the_replica_under_load(
    primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    # The replica also replays every other test session's work on this server: give a
    # read after its own write time to see it there, as a production setting would.
    rdb = make_db(primary_url, replica_url, max_wait=2.0)
    rdb.drop_all()
    rdb.create_all()
    wait_for_table(replica_admin)
    ports: list[int] = []
    stale: list[str] = []
    lock = threading.Lock()

    def user(number: int) -> None:
        for step in range(15):
            name = f"user{number}-{step}"
            add(rdb, name)
            for _ in range(3):
                port, names = read(rdb)
                with lock:
                    ports.append(port)
                    if name not in names:
                        stale.append(name)

    threads = [threading.Thread(target=user, args=(number,)) for number in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        rdb.drop_all()
        rdb.dispose()
    on_replica = sum(port == REPLICA_PORT for port in ports) / len(ports)
    print(
        f"read-only units on the replica: {on_replica:.1%} of {len(ports)}; "
        f"stale own reads: {len(stale)}"
    )
    assert stale == []
    assert len(ports) == 4 * 15 * 3
    assert on_replica >= 0.9


# -- health ------------------------------------------------------------------------------------


def replica_pg_ctl(admin: sa.Engine, *arguments: str) -> None:
    with admin.connect() as connection:
        data = connection.scalar(sa.text("SHOW data_directory"))
        version = connection.scalar(sa.text("SHOW server_version_num"))
    binary = f"/usr/lib/postgresql/{str(version)[:2]}/bin/pg_ctl"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", binary, "-D", str(data), *arguments],
        check=True,
        capture_output=True,
    )


def test_reads_move_to_the_primary_when_the_replica_dies_and_back_when_it_returns(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    if os.geteuid() != 0:
        pytest.fail("stopping the replica needs root (as scripts/replica.sh does)")
    add(rdb, "durable")
    reads: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    @rdb.transactional(read_only=True, retries=2)
    def read_once() -> int:
        port: int | None = rdb.session.scalar(sa.text("SELECT inet_server_port()"))
        assert rdb.session.scalars(sa.select(Item.name)).all() == ["durable"]
        assert port is not None
        return port

    def reader() -> None:
        while not stop.is_set():
            try:
                port = read_once()
            except BaseException as error:  # any failed unit fails the test
                failures.append(error)
                return
            reads.append(port)

    def seen_after(mark: int, port: int) -> Callable[[], bool]:
        return lambda: any((p == REPLICA_PORT) == (port == REPLICA_PORT) for p in reads[mark:])

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        poll(seen_after(0, REPLICA_PORT), what="reads on the replica")
        replica_pg_ctl(replica_admin, "stop", "-m", "immediate", "-w")
        mark = len(reads)
        poll(seen_after(mark, 5432), what="reads to move to the primary")
        subprocess.run(["bash", str(SCRIPT), "start"], check=True, capture_output=True)
        mark = len(reads)
        poll(seen_after(mark, REPLICA_PORT), what="reads to come back to the replica")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert rdb.replicas is not None and rdb.replicas.stats.marked_down >= 1


def test_an_unreachable_replica_is_never_an_error(primary_url: str) -> None:
    db = Database(
        primary_url,
        metadata=Base.metadata,
        replicas=Replicas(["postgresql+psycopg://postgres@127.0.0.1:1/none"], backoff=60),
    )
    db.drop_all()
    db.create_all()
    try:
        add(db, "kept")
        assert read(db)[1] == ["kept"]
        assert read(db)[1] == ["kept"]
        assert db.replicas is not None
        assert db.replicas.stats.marked_down == 1  # then left out for the back-off period
        assert db.replicas.stats.fallbacks_to_primary == 2
    finally:
        db.drop_all()
        db.dispose()


def test_a_primary_listed_as_a_replica_is_never_read_from_as_one_and_a_warning_says_so(
    primary_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(
        primary_url,
        metadata=Base.metadata,
        replicas=Replicas([primary_url], probe_interval=0.0, backoff=60),
    )
    db.drop_all()
    db.create_all()
    try:
        add(db, "kept")
        assert read(db)[1] == ["kept"]
        assert read(db)[1] == ["kept"]
        assert db.replicas is not None
        assert db.replicas.stats.reads_on_replicas == 0
        assert db.replicas.stats.fallbacks_to_primary == 2
        assert db.replicas.stats.probes == 1  # then left out for the back-off period
    finally:
        db.drop_all()
        db.dispose()
    assert any("is not in recovery; skipping it" in message for message in caplog.messages)


def test_a_textual_write_counts_so_the_writer_reads_it_back_while_replay_is_paused(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    read(rdb)
    with paused_replay(replica_admin):
        with rdb.unit_of_work():
            rdb.session.execute(sa.text("INSERT INTO uow_item (name) VALUES ('by hand')"))
        assert parse_token(rdb.causal_token()) is not None
        assert read(rdb)[1] == ["by hand"]
        assert in_fresh_thread(lambda: read(rdb)) == (REPLICA_PORT, [])


def test_a_writer_whose_commit_position_cannot_be_read_reads_the_primary_with_a_warning(
    rdb: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse_position(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if "pg_current_wal_insert_lsn" in statement:
            raise RuntimeError("the primary went away")

    read(rdb)
    event.listen(rdb.engine, "before_cursor_execute", refuse_position)
    try:
        add(rdb, "written")  # committed: only reading its position failed
    finally:
        event.remove(rdb.engine, "before_cursor_execute", refuse_position)
    assert any("could not read the primary's WAL position" in m for m in caplog.messages)
    assert read(rdb) == (5432, ["written"])
    # The token reads the primary's position now: another thread given it sees the write.
    token = rdb.causal_token()
    assert parse_token(token) not in (None, UNKNOWN_POSITION)
    assert in_fresh_thread(lambda: read(rdb, after=token)[1]) == ["written"]


def test_after_a_commit_whose_outcome_is_unknown_the_scope_and_its_token_read_the_primary(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    import psycopg

    read(rdb)
    dialect = rdb.engine.dialect
    commit = dialect.do_commit

    def commit_then_lose_the_answer(pooled: Any) -> None:
        commit(pooled)  # the COMMIT lands; its answer is lost on the way back
        pooled.dbapi_connection.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with paused_replay(replica_admin):
        dialect.do_commit = commit_then_lose_the_answer  # type: ignore[method-assign,assignment]
        try:
            with pytest.raises(CommitOutcomeUnknown):
                add(rdb, "landed")
        finally:
            dialect.do_commit = commit  # type: ignore[method-assign]
        assert read(rdb) == (5432, ["landed"])  # "is the work there?" asks the primary
        token = rdb.causal_token()
        assert in_fresh_thread(lambda: read(rdb, after=token)) == (5432, ["landed"])
        assert in_fresh_thread(lambda: read(rdb)) == (REPLICA_PORT, [])  # replay is paused


def test_a_pooled_replica_connection_the_server_closed_is_replaced_before_a_unit_uses_it(
    rdb: Database, replica_admin: sa.Engine
) -> None:
    add(rdb, "durable")
    with rdb.unit_of_work(read_only=True):
        assert rdb.session.scalar(sa.text("SELECT inet_server_port()")) == REPLICA_PORT
        pid = rdb.session.scalar(sa.text("SELECT pg_backend_pid()"))
    with replica_admin.connect() as connection:
        assert connection.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        poll(
            lambda: not connection.scalar(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ),
            what="the replica backend to exit",
        )
    assert read(rdb) == (REPLICA_PORT, ["durable"])
    assert rdb.replicas is not None and rdb.replicas.stats.marked_down == 0


# -- cost ----------------------------------------------------------------------------------------


def count_round_trips(*engines: sa.Engine) -> list[str]:
    """Record each statement, BEGIN, COMMIT and ROLLBACK that reaches a server."""
    sent: list[str] = []
    for engine in engines:
        event.listen(engine, "begin", lambda conn: sent.append("BEGIN"))
        event.listen(engine, "commit", lambda conn: sent.append("COMMIT"))
        event.listen(engine, "rollback", lambda conn: sent.append("ROLLBACK"))
        event.listen(
            engine,
            "before_cursor_execute",
            lambda conn, cursor, statement, *rest: sent.append(statement),
        )
    return sent


def test_a_read_only_unit_costs_the_same_round_trips_on_a_replica_as_on_the_primary(
    primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    db = make_db(primary_url, replica_url, probe_interval=3600.0)
    db.drop_all()
    db.create_all()
    wait_for_table(replica_admin)
    plain = Database(primary_url)
    assert db.replicas is not None
    try:
        read(db)  # the first unit probes the replica once
        read(plain)
        on_replica = count_round_trips(db.engine, db.replicas.replicas[0].variants.engine)
        on_primary = count_round_trips(plain.engine)
        for _ in range(20):
            assert read(db)[0] == REPLICA_PORT
            read(plain)
        print(f"round trips per read-only unit: {len(on_replica) / 20} with a replica, "
              f"{len(on_primary) / 20} without")
        assert len(on_replica) == len(on_primary) == 20 * 4  # BEGIN, 2 SELECTs, ROLLBACK
        assert db.replicas.stats.probes == 1
    finally:
        db.drop_all()
        db.dispose()
        plain.dispose()


def test_a_unit_that_wrote_reads_the_commit_position_once_and_one_that_only_read_never(
    rdb: Database,
) -> None:
    sent = count_round_trips(rdb.engine)
    with rdb.unit_of_work():
        rdb.session.scalars(sa.select(Item)).all()
    assert not any("wal" in statement for statement in sent)
    add(rdb, "written")
    assert sum("pg_current_wal_insert_lsn" in statement for statement in sent) == 1


# -- Flask -------------------------------------------------------------------------------------


def make_worker(primary_url: str, replica_url: str) -> tuple[Flask, Database]:
    """One app process's worth: its own Database (pools, caches), the shared secret key."""
    db = make_db(primary_url, replica_url)
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test secret"
    db.init_app(app)

    @app.post("/items/<name>")
    @db.transactional
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return name, 201

    @app.get("/items")
    @db.transactional(read_only=True)
    def names() -> Response:
        port = db.session.scalar(sa.text("SELECT inet_server_port()"))
        return jsonify(port=port, names=list(db.session.scalars(sa.select(Item.name))))

    return app, db


def test_a_user_who_posts_then_gets_on_another_worker_never_reads_stale_data(
    rdb: Database, primary_url: str, replica_url: str, replica_admin: sa.Engine
) -> None:
    (app1, db1), (app2, db2) = (make_worker(primary_url, replica_url) for _ in range(2))
    stale: list[str] = []
    own_on_primary: list[int] = []
    others_on_replica: list[int] = []
    lock = threading.Lock()

    def user(number: int) -> None:
        poster, getter = app1.test_client(), app2.test_client()
        for step in range(5):
            name = f"u{number}-{step}"
            assert poster.post(f"/items/{name}").status_code == 201
            cookie = poster.get_cookie("session")
            assert cookie is not None, "the write's position travels in the session cookie"
            getter.set_cookie("session", cookie.value)
            body = getter.get("/items").get_json()
            stranger = app2.test_client().get("/items").get_json()
            with lock:
                if name not in body["names"]:
                    stale.append(name)
                own_on_primary.append(body["port"] != REPLICA_PORT)
                others_on_replica.append(stranger["port"] == REPLICA_PORT)

    try:
        with paused_replay(replica_admin):
            threads = [threading.Thread(target=user, args=(n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        print(f"stale own reads: {len(stale)} of {len(own_on_primary)}; "
              f"other users' reads on the replica: {sum(others_on_replica)}")
        assert len(own_on_primary) == 30
        assert stale == []
        assert all(own_on_primary)  # replay was paused: only the primary had them
        assert all(others_on_replica)  # strangers have no position: the replica, within max lag
    finally:
        db1.dispose()
        db2.dispose()


def test_users_posting_then_getting_through_gunicorn_workers_never_read_stale_data(
    rdb: Database,
    primary_url: str,
    replica_url: str,
    replica_admin: sa.Engine,
    tmp_path: Path,
) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    server = Gunicorn(
        "tests.replica_app:create_app()",
        env={"PRIMARY_URL": primary_url, "REPLICA_URL": replica_url, "PYTHONPATH": root},
        log_path=tmp_path / "gunicorn.log",
        workers=2,
        threads=4,
    )
    stale: list[str] = []
    own_on_primary: list[bool] = []
    others_on_replica: list[bool] = []
    crossed: list[bool] = []  # a GET served by another worker than the POST before it
    lock = threading.Lock()

    def user(number: int) -> None:
        for step in range(8):
            name = f"g{number}-{step}"
            posted = call(server.port, "POST", f"/items/{name}")
            assert posted.status == 201, posted.body
            cookie = posted.headers["set-cookie"].split(";", 1)[0]
            got = call(server.port, "GET", "/items", headers={"Cookie": cookie})
            stranger = call(server.port, "GET", "/items")
            assert got.status == stranger.status == 200
            body = got.json()
            with lock:
                if name not in body["names"]:
                    stale.append(name)
                own_on_primary.append(body["port"] != REPLICA_PORT)
                others_on_replica.append(stranger.json()["port"] == REPLICA_PORT)
                crossed.append(body["worker"] != posted.json()["worker"])

    with server, paused_replay(replica_admin):
        threads = [threading.Thread(target=user, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(
        f"gunicorn: stale own reads {len(stale)} of {len(own_on_primary)}; "
        f"other users' reads on the replica {sum(others_on_replica)} of "
        f"{len(others_on_replica)}; GETs served by another worker than their POST {sum(crossed)}"
    )
    assert len(own_on_primary) == 6 * 8
    assert stale == []
    assert all(own_on_primary)
    assert all(others_on_replica)


def test_an_app_without_a_secret_key_is_warned_that_users_may_read_stale_data(
    rdb: Database, primary_url: str, replica_url: str
) -> None:
    app, db = make_worker(primary_url, replica_url)
    app.config["SECRET_KEY"] = None
    client = app.test_client()
    with pytest.warns(UnitOfWorkWarning, match="SECRET_KEY"):
        assert client.post("/items/unsigned").status_code == 201
    assert client.get_cookie("session") is None
    db.dispose()


def test_flask_uow_check_reports_each_replica_and_a_pooler(
    rdb: Database, primary_url: str, replica_url: str
) -> None:
    app, db = make_worker(primary_url, replica_url)
    output = app.test_cli_runner().invoke(args=["uow", "check"]).output
    assert "pooler: none" in output
    assert "replica: postgresql+psycopg://postgres@127.0.0.1:5433/" in output
    assert "reachable, lag " in output
    db.dispose()

    down = Database(
        primary_url, replicas=["postgresql+psycopg://app:hunter2@127.0.0.1:1/none"]
    )
    app = Flask(__name__)
    down.init_app(app)
    output = app.test_cli_runner().invoke(args=["uow", "check"]).output
    assert "replica: postgresql+psycopg://app:***@127.0.0.1:1/none UNREACHABLE" in output
    assert "hunter2" not in output
    down.dispose()


def test_flask_uow_check_says_when_a_replica_is_not_a_standby(primary_url: str) -> None:
    db = Database(primary_url, replicas=[primary_url])
    app = Flask(__name__)
    db.init_app(app)
    output = app.test_cli_runner().invoke(args=["uow", "check"]).output
    assert "reachable but not a standby (not in recovery)" in output
    db.dispose()
