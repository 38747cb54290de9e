"""A connection that dies at the worst moment, pinned down on real connections killed from
outside: right before a unit uses it from the pool, and right after its COMMIT.

Both were found by the bank test on MariaDB, where SQLAlchemy's per-connection isolation
level cost a round trip at checkout and checkin: a dead connection there raised the raw
driver error, so the unit was not retried, or failed after its COMMIT had succeeded and left
its connection checked out for good.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flask_uow import Database

from ._faults import ConnectionKiller, admin_engine, checked_out
from .conftest import SERVERS, LogRecorder, Target

metadata = sa.MetaData()
rows = sa.Table("rel_dead_connections", metadata, sa.Column("id", sa.Integer, primary_key=True))

pytestmark = pytest.mark.parametrize("backend_url", SERVERS, indirect=True)


@pytest.fixture
def database(target: Target, logs: LogRecorder) -> Iterator[tuple[Database, ConnectionKiller]]:
    """A Database of one pooled connection, and a killer aimed at that connection."""
    application_name = f"flask_uow_rel_{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5}
    if target.backend == "postgresql":
        options["connect_args"] = {"application_name": application_name}
    db = Database(target.url, engine_options=options, metadata=metadata)
    db.drop_all()
    db.create_all()
    killer = ConnectionKiller(
        target.admin_url,
        database=target.database,
        application_name=application_name if target.backend == "postgresql" else None,
    )
    yield db, killer
    killer.close()
    db.dispose()
    db.drop_all()
    db.dispose()


@pytest.mark.parametrize("isolation_level", [None, "SERIALIZABLE"])
def test_unit_is_retried_after_its_idle_pooled_connection_was_killed(
    database: tuple[Database, ConnectionKiller],
    isolation_level: str | None,
    figures: dict[str, Any],
) -> None:
    """A pooled connection killed while idle is a transient error, at any isolation level."""
    db, killer = database

    @db.transactional(isolation_level=isolation_level, retries=2)
    def ping() -> int:
        return int(db.session.execute(sa.text("SELECT 1")).scalar_one())

    assert ping() == 1
    assert killer.kill_all() == 1
    killer.wait_until_gone()
    assert ping() == 1
    figures.update(connections_killed=killer.kills, retries=db.stats.retried)
    assert db.stats.retried == 1
    assert checked_out(db.engine) == 0


@pytest.mark.parametrize("isolation_level", [None, "SERIALIZABLE"])
def test_unit_commits_when_its_connection_dies_right_after_commit(
    target: Target,
    database: tuple[Database, ConnectionKiller],
    monkeypatch: pytest.MonkeyPatch,
    isolation_level: str | None,
    figures: dict[str, Any],
) -> None:
    """COMMIT succeeded, so the unit committed: no exception, on_commit hooks, no leak."""
    db, killer = database
    dialect = db.engine.dialect
    do_commit: Callable[[Any], None] = dialect.do_commit

    def commit_then_die(dbapi_connection: Any) -> None:
        do_commit(dbapi_connection)
        killer.kill_all()
        killer.wait_until_gone()

    monkeypatch.setattr(dialect, "do_commit", commit_then_die)
    hooks: list[str] = []
    with db.unit_of_work(isolation_level=isolation_level) as unit:
        unit.on_commit(lambda: hooks.append("commit"))
        unit.on_rollback(lambda: hooks.append("rollback"))
        unit.session.execute(rows.insert().values(id=1))
    monkeypatch.undo()

    engine = admin_engine(target.admin_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(rows.c.id)).scalars().all()
    finally:
        engine.dispose()
    figures.update(connections_killed=killer.kills, rows_stored=len(stored), hooks_run=hooks)
    assert stored == [1]
    assert hooks == ["commit"]
    assert (db.stats.committed, db.stats.rolled_back) == (1, 0)
    assert killer.kills == 1
    assert checked_out(db.engine) == 0
