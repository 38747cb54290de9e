"""retries=N: transient failures run the function again in a fresh unit; nothing else does."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from flask_uow import Database

from .conftest import checked_out, committed_names
from .models import Item


class Boom(Exception):
    pass


def _backend_pid(session: Session, backend_name: str) -> int:
    query = "SELECT pg_backend_pid()" if backend_name == "postgresql" else "SELECT CONNECTION_ID()"
    pid = session.execute(sa.text(query)).scalar_one()
    return int(pid)


def _kill(observer: sa.Engine, backend_name: str, pid: int) -> None:
    with observer.connect() as connection:
        if backend_name == "postgresql":
            connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:
            connection.exec_driver_sql(f"KILL {pid}")


def test_a_deadlock_is_retried_and_both_transfers_commit_once(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE, so it cannot deadlock")
    with db.unit_of_work():
        db.session.add_all([Item(name="left"), Item(name="right")])
    barrier = threading.Barrier(2, timeout=10)
    commits: list[str] = []
    attempts: list[str] = []
    errors: list[BaseException] = []

    @db.transactional(retries=5)
    def touch(first: str, second: str) -> None:
        attempts.append(first)
        db.current.on_commit(lambda: commits.append(first))  # type: ignore[union-attr]
        db.session.execute(sa.update(Item).where(Item.name == first).values(name=first))
        if attempts.count(first) == 1:
            barrier.wait()
        db.session.execute(sa.update(Item).where(Item.name == second).values(name=second))

    def run(first: str, second: str) -> None:
        try:
            touch(first, second)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=("left", "right")),
        threading.Thread(target=run, args=("right", "left")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(commits) == ["left", "right"]
    assert db.stats.retried >= 1
    assert len(attempts) == 2 + db.stats.retried
    assert checked_out(db) == 0


def test_sqlite_database_is_locked_is_retried_until_the_lock_is_released(
    tmp_path: pytest.TempPathFactory,
) -> None:
    from .models import Base

    url = f"sqlite:///{tmp_path}/locked.db"
    db = Database(url, metadata=Base.metadata, engine_options={"connect_args": {"timeout": 0.05}})
    db.create_all()
    holder = sa.create_engine(url)
    locked = threading.Event()
    release = threading.Event()

    def hold_write_lock() -> None:
        with holder.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            locked.set()
            release.wait(10)
            connection.exec_driver_sql("ROLLBACK")

    @db.transactional(retries=20)
    def insert() -> None:
        if db.stats.retried == 2:
            release.set()
        db.session.add(Item(name="eventually"))

    thread = threading.Thread(target=hold_write_lock)
    thread.start()
    assert locked.wait(10)
    try:
        insert()
    finally:
        release.set()
        thread.join(10)
    assert db.stats.retried >= 2
    assert committed_names(holder) == ["eventually"]
    holder.dispose()
    db.dispose()


@pytest.mark.parametrize("backend_url", ["mariadb"], indirect=True)
def test_a_mariadb_snapshot_isolation_write_conflict_is_retried(
    backend_url: str, observer: sa.Engine
) -> None:
    """With innodb_snapshot_isolation (the default from MariaDB 11.6), REPEATABLE READ
    refuses to overwrite a row changed since its snapshot: error 1020, "try restarting
    transaction"."""
    from .models import Base

    db = Database(
        backend_url,
        metadata=Base.metadata,
        engine_options={"connect_args": {"init_command": "SET innodb_snapshot_isolation = ON"}},
    )
    db.drop_all()
    db.create_all()
    try:
        with db.unit_of_work():
            db.session.add(Item(name="seat"))
        names: list[str] = []

        @db.transactional(retries=2, isolation_level="REPEATABLE READ")
        def rename() -> None:
            item = db.session.execute(sa.select(Item)).scalar_one()  # the snapshot
            names.append(item.name)
            if len(names) == 1:
                with observer.begin() as other:
                    other.execute(sa.update(Item).values(name="taken"))
            item.name = f"{item.name}, renamed"

        rename()
        assert names == ["seat", "taken"]
        assert committed_names(observer) == ["taken, renamed"]
        assert db.stats.retried == 1
    finally:
        db.drop_all()
        db.dispose()


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_a_connection_lost_before_commit_is_retried(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    calls: list[int] = []

    @db.transactional(retries=2)
    def insert() -> None:
        calls.append(1)
        db.session.add(Item(name="after-reconnect"))
        if len(calls) == 1:
            _kill(observer, backend_name, _backend_pid(db.session, backend_name))
        db.session.execute(sa.select(Item.id))

    insert()
    assert len(calls) == 2
    assert committed_names(observer) == ["after-reconnect"]
    assert db.stats.retried == 1


@pytest.mark.parametrize("backend_url", ["postgresql", "mariadb"], indirect=True)
def test_a_connection_lost_in_a_before_commit_listener_is_retried_as_nothing_was_committed(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    """``before_commit`` runs before the final flush, as with a plain Session: no COMMIT yet."""
    calls: list[int] = []

    @db.transactional(retries=3)
    def insert() -> None:
        calls.append(1)
        if len(calls) == 1:
            pid = _backend_pid(db.session, backend_name)
            event.listen(
                db.session, "before_commit", lambda session: _kill(observer, backend_name, pid)
            )
        db.session.add(Item(name="after-reconnect"))  # flushed after before_commit

    insert()
    assert len(calls) == 2
    assert db.stats.retried == 1
    assert committed_names(observer) == ["after-reconnect"]
    assert checked_out(db) == 0


def test_integrity_errors_and_application_errors_are_never_retried(db: Database) -> None:
    calls: list[str] = []

    @db.transactional(retries=3)
    def duplicate() -> None:
        calls.append("duplicate")
        db.session.add_all([Item(name="same"), Item(name="same")])

    @db.transactional(retries=3)
    def fail() -> None:
        calls.append("fail")
        raise Boom

    with pytest.raises(sa.exc.IntegrityError):
        duplicate()
    with pytest.raises(Boom):
        fail()
    assert calls == ["duplicate", "fail"]
    assert db.stats.retried == 0


def test_a_joined_unit_never_retries_on_its_own(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("needs a server connection to lose")
    calls: list[int] = []

    @db.transactional(retries=3)
    def inner() -> None:
        calls.append(1)
        _kill(observer, backend_name, _backend_pid(db.session, backend_name))
        db.session.execute(sa.select(1))

    with pytest.raises(sa.exc.OperationalError):
        with db.unit_of_work():
            inner()
    assert calls == [1]
    assert db.stats.retried == 0


def test_hooks_of_failed_attempts_never_run(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("needs a server connection to lose")
    seen: list[str] = []
    attempts: list[int] = []

    @db.transactional(retries=2)
    def insert() -> None:
        attempt = len(attempts)
        attempts.append(attempt)
        db.current.on_commit(lambda: seen.append(f"commit {attempt}"))  # type: ignore[union-attr]
        db.current.on_rollback(lambda: seen.append(f"rollback {attempt}"))  # type: ignore[union-attr]
        if attempt == 0:
            _kill(observer, backend_name, _backend_pid(db.session, backend_name))
        db.session.execute(sa.select(1))

    insert()
    assert attempts == [0, 1]
    assert seen == ["commit 1"]


def test_rollback_hooks_of_the_last_failed_attempt_run(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("needs a server connection to lose")
    seen: list[int] = []

    @db.transactional(retries=1)
    def always_lost() -> None:
        attempt = db.stats.retried
        db.current.on_rollback(lambda: seen.append(attempt))  # type: ignore[union-attr]
        _kill(observer, backend_name, _backend_pid(db.session, backend_name))
        db.session.execute(sa.select(1))

    with pytest.raises(sa.exc.OperationalError):
        always_lost()
    assert seen == [1]


def test_after_the_last_attempt_the_last_error_propagates(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("needs a server connection to lose")
    errors: list[BaseException] = []

    @db.transactional(retries=2)
    def always_lost() -> None:
        _kill(observer, backend_name, _backend_pid(db.session, backend_name))
        try:
            db.session.execute(sa.select(1))
        except sa.exc.OperationalError as error:
            errors.append(error)
            raise

    with pytest.raises(sa.exc.OperationalError) as raised:
        always_lost()
    assert len(errors) == 3
    assert raised.value is errors[-1]
    assert db.stats.retried == 2


def test_negative_retries_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="retries"):
        db.transactional(retries=-1)
