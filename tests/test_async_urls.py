"""Which async driver an async unit uses, and the errors that say how to choose another."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flask_uow import Database, UnitOfWorkError
from flask_uow._aio import async_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///app.db", "sqlite+aiosqlite:///app.db"),
        ("sqlite+pysqlite:///app.db", "sqlite+aiosqlite:///app.db"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("mysql+pymysql://u@h/d", "mysql+aiomysql://u@h/d"),
        ("mariadb+pymysql://u@h/d", "mariadb+aiomysql://u@h/d"),
        ("mysql+asyncmy://u@h/d", "mysql+asyncmy://u@h/d"),
    ],
)
def test_the_async_url_swaps_the_driver_and_keeps_async_ones(url: str, expected: str) -> None:
    assert async_url(sa.make_url(url)).render_as_string() == expected


def test_a_bare_postgresql_url_runs_async_units_on_psycopg() -> None:
    # SQLAlchemy 2.0's default PostgreSQL driver is psycopg2 (swapped), 2.1's psycopg (kept).
    engine = create_async_engine(async_url(sa.make_url("postgresql://u@h/d")))
    assert (engine.dialect.driver, engine.dialect.is_async) == ("psycopg", True)


def test_a_backend_without_a_known_async_driver_asks_for_async_url() -> None:
    with pytest.raises(UnitOfWorkError, match="async_url=") as raised:
        async_url(sa.make_url("oracle://scott:tiger@h/d"))
    assert "tiger" not in str(raised.value)


def test_an_explicit_async_url_is_used(tmp_path: object) -> None:
    db = Database("sqlite:///ignored.db", async_url=f"sqlite+aiosqlite:///{tmp_path}/async.db")
    assert db.async_engine.url.database == f"{tmp_path}/async.db"
    db.async_engine.sync_engine.dispose()


def test_the_async_session_of_a_sync_unit_is_refused_with_the_right_attribute(
    tmp_path: object,
) -> None:
    db = Database(f"sqlite:///{tmp_path}/sync.db")
    with db.unit_of_work() as uow:
        with pytest.raises(UnitOfWorkError, match="use uow.session"):
            uow.async_session  # noqa: B018
    db.dispose()
