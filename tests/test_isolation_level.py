"""isolation_level applies to one unit's connection, and serialization failures are retried."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from flask_uow import Database

from .conftest import checked_out
from .models import Item


def test_isolation_level_applies_to_the_unit_and_is_reset_afterwards(
    db: Database, observer: sa.Engine, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite is always SERIALIZABLE")
    with db.unit_of_work():
        db.session.add(Item(name="row"))
    for _ in range(2):  # the same pooled connection, set and then back to the default
        with db.unit_of_work(isolation_level="serializable"):
            assert _runs_serializable(db, observer, backend_name)
        with db.unit_of_work():
            assert not _runs_serializable(db, observer, backend_name)
    assert checked_out(db) == 0


def _runs_serializable(db: Database, observer: sa.Engine, backend_name: str) -> bool:
    if backend_name == "postgresql":
        level = db.session.execute(sa.text("SHOW transaction_isolation")).scalar_one()
        return str(level) == "serializable"
    # InnoDB reads take shared locks only at SERIALIZABLE: a writer elsewhere must wait.
    db.session.execute(sa.select(Item.id)).all()
    with observer.connect() as other:
        other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        try:
            other.execute(sa.update(Item).values(name="changed"))
        except sa.exc.OperationalError as error:
            assert error.orig is not None and error.orig.args[0] == 1205
            return True
        finally:
            other.rollback()
    return False


def test_autocommit_is_refused_because_a_unit_is_a_transaction(db: Database) -> None:
    with pytest.raises(ValueError, match="AUTOCOMMIT"):
        db.unit_of_work(isolation_level="AUTOCOMMIT")


def test_an_unknown_isolation_level_is_refused_with_the_valid_names(db: Database) -> None:
    with pytest.raises(ValueError, match="REPEATABLE READ"):
        db.unit_of_work(isolation_level="SERIALIZABLE; DROP TABLE uow_item")


def test_a_serialization_failure_is_retried_until_both_units_commit(
    db: Database, backend_name: str
) -> None:
    if backend_name != "postgresql":
        pytest.skip("SQLSTATE 40001 at SERIALIZABLE is PostgreSQL's; others lock instead")
    with db.unit_of_work():
        db.session.add(Item(name="counter-0"))
    both_read = threading.Barrier(2, timeout=10)
    attempts: list[str] = []
    errors: list[BaseException] = []

    @db.transactional(isolation_level="SERIALIZABLE", retries=5)
    def increment(worker: str) -> None:
        attempts.append(worker)
        item = db.session.scalars(sa.select(Item)).one()
        if attempts.count(worker) == 1:
            both_read.wait()
        number = int(item.name.split("-")[1])
        item.name = f"counter-{number + 1}"

    def run(worker: str) -> None:
        try:
            increment(worker)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert db.stats.retried >= 1
    with db.unit_of_work(read_only=True):
        assert db.session.scalars(sa.select(Item.name)).one() == "counter-2"
    assert checked_out(db) == 0


def test_an_engine_wide_isolation_level_survives_units_that_set_their_own(
    backend_url: str, backend_name: str
) -> None:
    if backend_name != "postgresql":
        pytest.skip("checks PostgreSQL's SHOW transaction_isolation")
    db = Database(backend_url, engine_options={"isolation_level": "REPEATABLE READ"})

    def level() -> str:
        return str(db.session.execute(sa.text("SHOW transaction_isolation")).scalar_one())

    for _ in range(2):
        with db.unit_of_work(isolation_level="SERIALIZABLE", read_only=True):
            assert level() == "serializable"
        with db.unit_of_work():
            assert level() == "repeatable read"
            assert db.session.execute(sa.text("SHOW transaction_read_only")).scalar() == "off"
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone() == ("off",)
    finally:
        raw.close()
    db.dispose()
