"""flask_uow.testing.scratch_database() for the cases a test session meets less often."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_uow.testing import scratch_database


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
def test_an_in_memory_sqlite_url_is_yielded_unchanged(url: str) -> None:
    with scratch_database(url) as scratch:
        assert scratch == sa.make_url(url)


def test_a_sqlite_file_lives_in_a_folder_of_its_own_that_is_removed_at_exit(
    tmp_path: Path,
) -> None:
    with scratch_database(f"sqlite:///{tmp_path / 'app.db'}", "scratch") as url:
        path = Path(str(url.database))
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        engine.dispose()
        assert path.name == "scratch.db"
        assert path.parent != tmp_path
        assert path.exists()

    assert not path.parent.exists()


def test_the_sqlite_folder_is_removed_also_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with scratch_database(f"sqlite:///{tmp_path / 'app.db'}") as url:
            folder = Path(str(url.database)).parent
            1 / 0  # noqa: B018

    assert not folder.exists()


def test_a_default_name_derives_from_the_database_and_differs_each_time(tmp_path: Path) -> None:
    base = f"sqlite:///{tmp_path / 'ledger.db'}"

    with scratch_database(base) as first, scratch_database(base) as second:
        names = [Path(str(url.database)).stem for url in (first, second)]

    assert all(name.startswith("ledger_") for name in names)
    assert names[0] != names[1]


@pytest.mark.parametrize(
    "url", ["oracle+oracledb://scott@127.0.0.1/orcl", "mssql+pyodbc://sa@127.0.0.1/master"]
)
def test_an_unsupported_backend_is_refused_by_name(url: str) -> None:
    backend = sa.make_url(url).get_backend_name()

    with pytest.raises(ValueError, match=f"not '{backend}'"):
        with scratch_database(url, "scratch"):
            pass


def test_a_server_database_is_dropped_also_when_the_block_raises(backend_url: str) -> None:
    if sa.make_url(backend_url).get_backend_name() == "sqlite":
        pytest.skip("covered for SQLite files by the folder tests above")
    with pytest.raises(ZeroDivisionError):
        with scratch_database(backend_url) as url:
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            1 / 0  # noqa: B018

    with pytest.raises(sa.exc.OperationalError):
        with engine.connect():
            pass
    engine.dispose()
