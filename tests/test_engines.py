"""The engines flask-uow makes: SQLite tuned for concurrency, psycopg's statement cache kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_uow import Database
from flask_uow._engines import EngineVariants, create_engine

from .models import Base, Item


def _pragma(engine: sa.Engine, name: str) -> object:
    with engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_a_sqlite_file_runs_in_wal_mode_with_normal_sync_by_default(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", {})
    assert _pragma(engine, "journal_mode") == "wal"
    assert _pragma(engine, "synchronous") == 1  # NORMAL
    assert _pragma(engine, "foreign_keys") == 1
    engine.dispose()


def test_sqlite_wal_can_be_turned_off_leaving_sqlites_own_defaults(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", {}, sqlite_wal=False)
    assert _pragma(engine, "journal_mode") == "delete"
    assert _pragma(engine, "synchronous") == 2  # FULL
    engine.dispose()


def test_an_in_memory_sqlite_database_is_left_in_memory_journal_mode() -> None:
    engine = create_engine("sqlite://", {})
    assert _pragma(engine, "journal_mode") == "memory"
    engine.dispose()


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_read_only_units_keep_psycopgs_prepared_statements(backend_url: str) -> None:
    """Direct connections only: behind PgBouncer flask-uow turns preparing off on purpose."""
    db = Database(backend_url, metadata=Base.metadata, engine_options={"pool_size": 1})
    db.drop_all()
    db.create_all()
    with db.unit_of_work():
        db.session.add(Item(name="a"))
    for _ in range(8):  # psycopg prepares a query from its 5th run in the same session
        with db.unit_of_work(read_only=True):
            db.session.get(Item, 1)
    with db.unit_of_work(read_only=True):
        prepared = db.session.execute(sa.text("SELECT count(*) FROM pg_prepared_statements"))
        assert prepared.scalar_one() >= 1
    db.drop_all()
    db.dispose()


def test_the_read_write_path_on_a_server_runs_on_the_stock_engine(
    backend_url: str, backend_name: str
) -> None:
    if backend_name == "sqlite":
        pytest.skip("SQLite needs a begin listener for real transactions")
    variants = EngineVariants(create_engine(backend_url, {}))
    engine = variants.for_unit(read_only=False, isolation_level=None)
    assert engine is variants.engine
    assert not list(engine.dispatch.begin)  # no per-transaction, per-statement dispatch
    read_only = variants.for_unit(read_only=True, isolation_level=None)
    if variants.engine.dialect.driver == "psycopg":
        # READ ONLY rides in the BEGIN psycopg sends, set by the variant's connections.
        assert not list(read_only.dispatch.begin)
        assert not list(read_only.dispatch.rollback)
        with read_only.connect() as connection:
            assert connection.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
    else:
        assert list(read_only.dispatch.begin)  # SET TRANSACTION READ ONLY from a listener
    variants.engine.dispose()


def test_a_locked_sqlite_database_fails_a_writer_with_sqlalchemys_operational_error(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    db = Database(
        f"sqlite:///{path}",
        metadata=Base.metadata,
        engine_options={"connect_args": {"timeout": 0.05}},
    )
    db.create_all()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with db.unit_of_work():
                db.session.add(Item(name="blocked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    db.dispose()


def test_engines_replicas_and_timeouts_import_each_other_in_one_direction_only() -> None:
    # Every import counts here, inside functions and under TYPE_CHECKING too: replicas build
    # on engines, engines on timeouts, and nothing leads back.
    import ast
    from pathlib import Path

    import flask_uow

    source = Path(flask_uow.__file__).parent

    def imports(module: str) -> set[str]:
        tree = ast.parse((source / f"{module}.py").read_text())
        return {
            node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }

    assert imports("_timeouts").isdisjoint({"_engines", "_replicas"})
    assert "_replicas" not in imports("_engines")
    assert "_engines" in imports("_replicas")
