"""statement_timeout and lock_timeout limit one unit's transaction and end it with UnitTimeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from flask_uow import Database, Propagation, UnitOfWorkError, UnitTimeout

from .conftest import async_checked_out, checked_out, committed_names
from .models import Item

pytestmark = pytest.mark.serial  # counts the transactions open on the server


@contextmanager
def row_locked_elsewhere(observer: sa.Engine, backend_name: str) -> Iterator[None]:
    """Hold a write lock on the items (SQLite: the database) from another connection."""
    with observer.connect() as other:
        if backend_name == "sqlite":
            other.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            other.execute(sa.update(Item).values(name="held"))
        try:
            yield
        finally:
            other.rollback()


def open_transactions(observer: sa.Engine, backend_name: str) -> int:
    """Transactions open on the server, seen from a new connection."""
    with observer.connect() as connection:
        if backend_name == "postgresql":
            return connection.scalar(  # type: ignore[no-any-return]
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                )
            )
        if backend_name == "mariadb":
            return connection.scalar(  # type: ignore[no-any-return]
                sa.text("SELECT count(*) FROM information_schema.innodb_trx")
            )
    return 0


def add_row(db: Database) -> None:
    with db.unit_of_work():
        db.session.add(Item(name="row"))


def test_a_unit_waiting_longer_than_its_lock_timeout_raises_unit_timeout_and_releases_all(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    add_row(db)
    started = time.monotonic()
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout) as raised:
            with db.unit_of_work(lock_timeout=0.1):
                db.session.execute(sa.update(Item).values(name="mine"))
        waited = time.monotonic() - started
        assert checked_out(db) == 0
        holders = 0 if backend_name == "sqlite" else 1
        assert open_transactions(observer, backend_name) == holders  # the lock holder's only
    # Far below the servers' own waits (PostgreSQL: forever, MariaDB: 50 s, ours: 15 s);
    # MariaDB counts whole seconds, so 0.1 s waits one second there.
    assert waited < 5
    error = raised.value
    assert error.kind == "lock"
    assert isinstance(error.__cause__, sa.exc.OperationalError)
    assert f"{__file__}:" in str(error) and "lock_timeout (100 ms)" in str(error)
    with db.unit_of_work():  # the pooled connection lost the short timeout
        assert db.session.scalar(sa.select(Item.name)) == "row"


@pytest.mark.anyio
async def test_an_async_unit_waiting_longer_than_its_lock_timeout_raises_unit_timeout(
    adb: Database, observer: sa.Engine, backend_name: str
) -> None:
    add_row(adb)
    started = time.monotonic()
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout) as raised:
            # Bounded: a unit that ignored its lock_timeout would wait forever on PostgreSQL.
            async with asyncio.timeout(10):
                async with adb.unit_of_work(lock_timeout=0.1):
                    await adb.async_session.execute(sa.update(Item).values(name="mine"))
        waited = time.monotonic() - started
        assert async_checked_out(adb) == 0
        holders = 0 if backend_name == "sqlite" else 1
        assert open_transactions(observer, backend_name) == holders  # the lock holder's only
    assert waited < 5
    error = raised.value
    assert error.kind == "lock"
    assert isinstance(error.__cause__, sa.exc.OperationalError)
    assert "lock_timeout (100 ms)" in str(error)


@pytest.mark.anyio
async def test_an_async_units_timeouts_apply_to_it_and_not_to_the_next_unit_on_its_connection(
    adb: Database, backend_name: str
) -> None:
    show = {
        "sqlite": "PRAGMA busy_timeout",
        "postgresql": "SELECT current_setting('lock_timeout')",
        "mariadb": "SELECT @@innodb_lock_wait_timeout",
    }[backend_name]
    drivers: list[int] = []
    async with adb.unit_of_work(lock_timeout=2) as uow:
        limited = await uow.session.scalar(sa.text(show))
        raw = await (await uow.session.connection()).get_raw_connection()
        drivers.append(id(raw.dbapi_connection))
    async with adb.unit_of_work() as uow:
        default = await uow.session.scalar(sa.text(show))
        raw = await (await uow.session.connection()).get_raw_connection()
        drivers.append(id(raw.dbapi_connection))
    del raw
    assert str(limited) in ("2s", "2", "2000")
    assert str(default) in ("0", "50", "15000")
    assert drivers[0] == drivers[1], "the connection was replaced instead of reset"


@pytest.mark.anyio
@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
async def test_an_async_unit_with_an_isolation_level_and_timeouts_runs_under_both(
    adb: Database,
) -> None:
    """psycopg's async connection takes the isolation level as SET TRANSACTION, which must
    come before anything else in the transaction, the timeouts' set_config() included."""
    async with adb.unit_of_work(isolation_level="SERIALIZABLE", lock_timeout=2) as uow:
        level = await uow.session.scalar(sa.text("SELECT current_setting('transaction_isolation')"))
        limited = await uow.session.scalar(sa.text("SELECT current_setting('lock_timeout')"))
    assert (level, limited) == ("serializable", "2s")


def test_a_statement_running_longer_than_statement_timeout_raises_unit_timeout(
    db: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    sleep = "SELECT pg_sleep(5)"
    if backend_name == "mariadb":
        sleep = "SELECT SLEEP(5) FROM uow_item"
    add_row(db)
    with pytest.raises(UnitTimeout) as raised:
        with db.unit_of_work(statement_timeout=timedelta(milliseconds=200)):
            db.session.execute(sa.text(sleep)).all()
    assert raised.value.kind == "statement"
    assert isinstance(raised.value.__cause__, sa.exc.DBAPIError)
    assert "statement_timeout (200 ms)" in str(raised.value)
    assert checked_out(db) == 0


def test_timeouts_leave_the_next_unit_on_the_same_connection_unlimited(
    db: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite keeps its busy timeout in the driver; see the lock test")
    show = (
        "SELECT current_setting('lock_timeout')"
        if backend_name == "postgresql"
        else "SELECT @@innodb_lock_wait_timeout"
    )
    with db.unit_of_work(lock_timeout=2):
        limited = db.session.scalar(sa.text(show))
    with db.unit_of_work():
        default = db.session.scalar(sa.text(show))
    assert str(limited) in ("2s", "2")
    assert str(default) in ("0", "50")


def test_the_database_default_applies_to_units_that_set_none(
    backend_url: str, observer: sa.Engine, backend_name: str
) -> None:
    from .models import Base

    db = Database(backend_url, metadata=Base.metadata, lock_timeout=0.1)
    db.drop_all()
    db.create_all()
    try:
        add_row(db)
        with row_locked_elsewhere(observer, backend_name):
            with pytest.raises(UnitTimeout):
                with db.unit_of_work():
                    db.session.execute(sa.update(Item).values(name="mine"))
            with pytest.raises(sa.exc.OperationalError) as unlimited:
                with db.unit_of_work(lock_timeout=0):  # 0 turns the default off
                    if backend_name == "mariadb":
                        db.session.execute(sa.text("SET innodb_lock_wait_timeout = 1"))
                    elif backend_name == "postgresql":
                        db.session.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
                    db.session.execute(sa.update(Item).values(name="mine"))
            assert not isinstance(unlimited.value, UnitTimeout)
    finally:
        db.drop_all()
        db.dispose()


def test_a_lock_timeout_is_retried_only_when_the_unit_opts_in(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    add_row(db)
    calls: list[str] = []

    def attempt(label: str) -> None:
        calls.append(label)
        db.session.execute(sa.update(Item).values(name=label))

    strict = db.transactional(lock_timeout=0.1, retries=2)(attempt)
    patient = db.transactional(lock_timeout=0.1, retries=2, retry_lock_timeouts=True)(attempt)
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout):
            strict("strict")
        with pytest.raises(UnitTimeout):
            patient("patient")
    assert calls == ["strict", "patient", "patient", "patient"]
    assert checked_out(db) == 0


def test_joined_units_run_under_the_timeouts_of_the_transaction_they_join(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    add_row(db)
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout, match="lock_timeout"):
            with db.unit_of_work(lock_timeout=0.1) as outer:
                with db.unit_of_work(lock_timeout=30):
                    db.session.execute(sa.update(Item).values(name="mine"))
    assert outer.timeouts is not None and outer.timeouts.lock == 0.1


def test_other_errors_of_a_unit_with_timeouts_pass_through_unchanged(db: Database) -> None:
    with pytest.raises(KeyError):
        with db.unit_of_work(lock_timeout=1, statement_timeout=1):
            db.session.execute(sa.select(Item)).all()
            raise KeyError("mine")
    with pytest.raises(sa.exc.IntegrityError):
        with db.unit_of_work(lock_timeout=1):
            db.session.add_all([Item(name="twin"), Item(name="twin")])


def test_a_lock_error_in_a_unit_with_only_a_statement_timeout_is_retried_as_usual(
    db: Database, observer: sa.Engine
) -> None:
    attempts: list[int] = []

    @db.transactional(statement_timeout=5, retries=1)
    def busy() -> None:
        attempts.append(1)
        db.session.add(Item(name=f"attempt {len(attempts)}"))
        db.session.flush()
        db.session.execute(sa.select(Item)).all()
        if len(attempts) == 1:  # what SQLite says when its busy timeout expires
            raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))

    busy()
    assert len(attempts) == 2
    assert committed_names(observer) == ["attempt 2"]


def test_a_statement_timeout_the_unit_did_not_set_raises_the_driver_error_unchanged(
    db: Database, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    add_row(db)
    with pytest.raises(sa.exc.DBAPIError) as raised:
        with db.unit_of_work(lock_timeout=5):
            if backend_name == "postgresql":
                db.session.execute(sa.text("SET LOCAL statement_timeout = '100ms'"))
                db.session.execute(sa.text("SELECT pg_sleep(2)"))
            else:
                limited = "SET STATEMENT max_statement_time=0.1 FOR SELECT SLEEP(2) FROM uow_item"
                db.session.execute(sa.text(limited)).all()
    assert not isinstance(raised.value, UnitTimeout)
    assert "statement" in str(raised.value.orig)  # the server's own words about its timeout
    assert checked_out(db) == 0


def test_the_timeout_of_an_inner_unit_passes_through_the_outer_unit_unchanged(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    add_row(db)
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(UnitTimeout) as raised:
            with db.unit_of_work(read_only=True, lock_timeout=30):
                db.session.execute(sa.select(Item)).all()
                with db.unit_of_work(propagation=Propagation.REQUIRES_NEW, lock_timeout=0.1):
                    db.session.execute(sa.update(Item).values(name="mine"))
    assert "lock_timeout (100 ms)" in str(raised.value)
    assert checked_out(db) == 0


def test_savepoints_inside_a_unit_with_timeouts_roll_back_and_release_as_usual(
    db: Database, observer: sa.Engine
) -> None:
    with db.unit_of_work(lock_timeout=5, statement_timeout=5):
        db.session.add(Item(name="outer"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.unit_of_work(propagation=Propagation.NESTED):
                db.session.add(Item(name="outer"))
                db.session.flush()
        with db.unit_of_work(propagation=Propagation.NESTED):
            db.session.add(Item(name="inner"))
    assert committed_names(observer) == ["inner", "outer"]


@pytest.mark.parametrize("bad", [-1, float("nan"), "100ms", True])
def test_a_timeout_that_is_not_a_duration_is_refused(db: Database, bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="lock_timeout"):
        db.unit_of_work(lock_timeout=bad)  # type: ignore[arg-type]


def test_a_unit_timeout_is_a_unit_of_work_error() -> None:
    assert issubclass(UnitTimeout, UnitOfWorkError)


@pytest.mark.flask
def test_flask_config_keys_set_the_default_timeouts(backend_url: str) -> None:
    import flask

    db = Database()
    app = flask.Flask(__name__)
    app.config.update(
        UOW_DATABASE_URL=backend_url, UOW_LOCK_TIMEOUT=0.25, UOW_STATEMENT_TIMEOUT=30
    )
    db.init_app(app)
    with app.app_context():
        with db.unit_of_work() as uow:
            pass
        with db.unit_of_work(lock_timeout=0) as unlimited:
            pass
    assert uow.timeouts is not None
    assert (uow.timeouts.lock, uow.timeouts.statement) == (0.25, 30.0)
    assert unlimited.timeouts is not None and unlimited.timeouts.lock is None
    db.dispose()


def test_a_statement_timeout_holds_when_the_units_first_statement_streams(
    db: Database, backend_name: str
) -> None:
    # The settings must not go out on the streamed statement's server-side cursor, which
    # PostgreSQL would declare and never run.
    if backend_name == "sqlite":
        pytest.skip("SQLite has no statement timeout")
    sleep = "SELECT pg_sleep(2)"
    if backend_name == "mariadb":
        add_row(db)
        sleep = "SELECT SLEEP(2) FROM uow_item"
    started = time.monotonic()
    with pytest.raises(UnitTimeout) as raised:
        with db.unit_of_work(statement_timeout=0.2):
            streamed = db.session.execute(
                sa.text(sleep), execution_options={"stream_results": True}
            )
            streamed.all()
    assert raised.value.kind == "statement"
    assert time.monotonic() - started < 1.5
    assert checked_out(db) == 0


@pytest.mark.parametrize("lock_timeout", [None, 5])
def test_a_nowait_lock_that_is_not_free_fails_at_once_unchanged_and_is_not_retried(
    db: Database, observer: sa.Engine, backend_name: str, lock_timeout: int | None
) -> None:
    # NOWAIT asked not to wait: its failure is no lock timeout (it waited for nothing) and
    # running the unit again would only ask the same question again.
    if backend_name == "sqlite":
        pytest.skip("SQLite has no FOR UPDATE NOWAIT")
    add_row(db)
    calls: list[int] = []

    @db.transactional(
        retries=2, lock_timeout=lock_timeout, retry_lock_timeouts=lock_timeout is not None
    )
    def claim() -> None:
        calls.append(1)
        db.session.execute(sa.select(Item).with_for_update(nowait=True)).all()

    started = time.monotonic()
    with row_locked_elsewhere(observer, backend_name):
        with pytest.raises(sa.exc.OperationalError) as raised:
            claim()
    assert time.monotonic() - started < 2
    assert not isinstance(raised.value, UnitTimeout)
    assert "lock_timeout" not in str(raised.value)
    assert calls == [1]
    assert checked_out(db) == 0
