"""With a read replica, the ledger's GET endpoints read from it, and a client sees its writes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow.testing import scratch_database
from ledger.app import create_app
from ledger.database import db

pytestmark = pytest.mark.serial  # they pause the one shared replica


@pytest.fixture
def replicated_app(primary_url: str, replica_url: str) -> Iterator[Flask]:
    """The ledger on a database of its own, whose tables the replica has, with replay paused."""
    with scratch_database(sa.make_url(primary_url).set(database="postgres")) as primary:
        replica = sa.make_url(replica_url).set(database=primary.database)
        app = create_app(
            {
                "UOW_DATABASE_URL": primary.render_as_string(hide_password=False),
                "UOW_REPLICA_URLS": [replica.render_as_string(hide_password=False)],
                "UOW_REPLICA_MAX_WAIT": 0.05,
                "SECRET_KEY": "tests only",
            }
        )
        with app.app_context():
            db.create_all()
        control = sa.create_engine(
            replica, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            _wait_for_tables(control)
            with control.connect() as connection:
                connection.exec_driver_sql("SELECT pg_wal_replay_pause()")
            yield app
        finally:
            with control.connect() as connection:
                connection.exec_driver_sql("SELECT pg_wal_replay_resume()")
            control.dispose()
            db.dispose()


def _wait_for_tables(replica: sa.Engine) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with replica.connect() as connection:
                connection.exec_driver_sql("SELECT 1 FROM customers LIMIT 1")
            return
        except sa.exc.DBAPIError:
            time.sleep(0.05)  # poll interval while the replica replays
    raise AssertionError("the replica never replayed the ledger's tables")


def test_a_client_reads_its_new_customer_although_the_replica_lags(replicated_app: Flask) -> None:
    client = replicated_app.test_client()  # keeps the session cookie, as a browser does
    created = client.post("/customers", json={"name": "Ada", "email": "ada@example.com"})
    assert created.status_code == 201, created.get_data(as_text=True)
    customer_id = created.get_json()["id"]

    read_back = client.get(f"/customers/{customer_id}")

    assert read_back.status_code == 200
    assert read_back.get_json()["name"] == "Ada"
    with replicated_app.app_context():  # the app's replicas count there
        assert db.stats.primary_fallbacks >= 1  # the paused replica had not replayed the write


def test_another_client_reads_from_the_lagging_replica(replicated_app: Flask) -> None:
    writer, other = replicated_app.test_client(), replicated_app.test_client()
    created = writer.post("/customers", json={"name": "Grace", "email": "grace@example.com"})
    assert created.status_code == 201

    answer = other.get(f"/customers/{created.get_json()['id']}")

    assert answer.status_code == 404  # stale, within the lag bound: the replica has not replayed
    with replicated_app.app_context():
        assert db.stats.replica_reads >= 1
