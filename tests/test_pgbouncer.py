"""Units behind a real PgBouncer in transaction pooling mode (``scripts/replica.sh start``).

The whole library suite also runs through it: ``pgbouncer`` is one of the ``backend_url``
parameters. These tests cover what only a pooler can break: prepared statements and
session state, and ``flask uow check`` naming the pooler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_uow import Database
from flask_uow._pgbouncer import BEHIND_POOLER

from .models import Base, Item

THREADS = 4
REPEATS = 30  # well past psycopg's prepare_threshold of 5


@pytest.fixture
def bounced(pgbouncer_url: str) -> Iterator[Database]:
    database = Database(
        pgbouncer_url, metadata=Base.metadata, engine_options={"pool_size": THREADS}
    )
    database.drop_all()
    database.create_all()
    yield database
    database.drop_all()
    database.dispose()


def run_in_threads(work: Callable[[], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=target) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_statements_repeated_past_the_prepare_threshold_keep_working(bounced: Database) -> None:
    def work() -> None:
        for number in range(REPEATS):
            with bounced.unit_of_work(read_only=True):
                bounced.session.scalars(sa.select(Item).where(Item.id == number)).all()
            with bounced.unit_of_work(isolation_level="SERIALIZABLE", read_only=True):
                level = bounced.session.scalar(sa.text("SHOW transaction_isolation"))
                assert level == "serializable"

    assert run_in_threads(work) == []
    with bounced.engine.connect() as connection:
        assert connection.connection.info[BEHIND_POOLER] is True
        assert connection.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]


def test_without_the_policy_psycopg_prepared_statements_break_behind_pgbouncer(
    pgbouncer_url: str,
) -> None:
    # Two client connections taking turns: PgBouncer hands each transaction the server
    # connection used last, so the second client's "_pg3_0" meets the first one's there. With
    # other clients on the same PgBouncer (a parallel test run), the first client's own
    # statements can already land on a server connection that lacks them: either way breaks.
    engine = sa.create_engine(pgbouncer_url, poolclass=sa.pool.NullPool)  # plain SQLAlchemy
    with engine.connect() as first, engine.connect() as second:
        with pytest.raises(sa.exc.DBAPIError, match="prepared statement"):
            for number in range(REPEATS):
                first.execute(sa.text("SELECT :n + 1"), {"n": number})
                first.commit()
            for number in range(REPEATS):
                second.execute(sa.text("SELECT :n + 1"), {"n": number})
                second.commit()
    engine.dispose()


def test_direct_connections_keep_preparing_statements(primary_url: str) -> None:
    db = Database(primary_url)
    with db.engine.connect() as connection:
        assert connection.connection.info[BEHIND_POOLER] is False
        assert connection.connection.dbapi_connection.prepare_threshold == 5  # type: ignore[union-attr]
    db.dispose()


def test_read_only_and_isolation_level_do_not_leak_to_the_next_transaction(
    bounced: Database,
) -> None:
    def work() -> None:
        for _ in range(10):
            with bounced.unit_of_work(read_only=True, isolation_level="REPEATABLE READ"):
                bounced.session.scalar(sa.text("SELECT 1"))
            with bounced.unit_of_work():
                assert bounced.session.scalar(sa.text("SHOW transaction_read_only")) == "off"
                level = bounced.session.scalar(sa.text("SHOW transaction_isolation"))
                assert level == "read committed"

    assert run_in_threads(work) == []


def test_flask_uow_check_names_pgbouncer_and_the_prepared_statement_policy(
    pgbouncer_url: str,
) -> None:
    db = Database()
    app = Flask(__name__)
    app.config["UOW_DATABASE_URL"] = pgbouncer_url
    db.init_app(app)
    output = app.test_cli_runner().invoke(args=["uow", "check"]).output
    assert "pooler: PgBouncer 1." in output
    assert "prepared statements off" in output
    with app.app_context():
        db.dispose()
