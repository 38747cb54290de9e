"""Settings the benchmark harness hands to every app through the environment."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

E = TypeVar("E", sa.Engine, AsyncEngine)

HOLD_SECONDS = 0.05
"""How long ``/bench/hold`` waits on its simulated external service."""


def database_url() -> str:
    if "BENCH_DATABASE_URL" not in os.environ:
        raise RuntimeError("BENCH_DATABASE_URL is not set; the apps in tests.peer_apps are "
                           "started by benchmarks/http.py and the tests, on a scratch database")
    return os.environ["BENCH_DATABASE_URL"]


def variables(url: sa.URL, pool_size: int, app_name: str) -> dict[str, str]:
    """The environment variables that hand these settings to an app."""
    return {"BENCH_DATABASE_URL": url.render_as_string(hide_password=False),
            "BENCH_POOL_SIZE": str(pool_size), "BENCH_APP_NAME": app_name}


@contextlib.contextmanager
def environment(url: sa.URL, pool_size: int, app_name: str) -> Iterator[None]:
    """The settings above for apps built in this process, restored after."""
    env = variables(url, pool_size, app_name)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "psycopg", "mysql": "aiomysql"}
"""The async driver of each backend, the one flask-uow derives from the sync URL: the Quart
apps run on the same drivers."""


def async_database_url() -> str:
    """``database_url()`` with the backend's async driver (psycopg serves both modes)."""
    url = sa.make_url(database_url())
    backend = url.get_backend_name()
    driver = ASYNC_DRIVERS["mysql" if backend == "mariadb" else backend]
    return url.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def engine_options() -> dict[str, Any]:
    """Pool settings, identical for every app; on PostgreSQL ``application_name`` tells the
    apps apart in ``pg_stat_activity``."""
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "8"))
    options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 30}
    if database_url().startswith("postgresql"):
        options["connect_args"] = {"application_name": os.environ.get("BENCH_APP_NAME", "bench")}
    return options


def sqlite_transactions(engine: sa.Engine, *pragmas: str) -> None:
    """SQLAlchemy's documented recipe for real transactions on (ai)sqlite: driver transactions
    off, ``BEGIN`` from a ``begin`` listener (``BEGIN IMMEDIATE`` on an engine given
    ``bench_write_lock=True``, as flask-uow sends for writes), foreign keys on, and ``pragmas``
    on every new connection."""

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("foreign_keys = ON", *pragmas):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("bench_write_lock")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def read_write_engines(engine: E) -> tuple[E, E]:
    """(read-write, read-only) engines on ``engine``'s one pool, as SQLAlchemy's documentation
    configures each backend: on PostgreSQL reads with ``postgresql_readonly=True`` (psycopg
    sends ``BEGIN READ ONLY``); on MariaDB reads send ``SET TRANSACTION READ ONLY`` first; on
    SQLite :func:`sqlite_transactions`."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync.dialect.name == "sqlite":
        sqlite_transactions(sync)
        return engine.execution_options(bench_write_lock=True), engine
    if sync.dialect.name == "postgresql":
        return engine, engine.execution_options(postgresql_readonly=True)
    read_only = engine.execution_options(bench_read_only=True)
    sync_read_only = read_only.sync_engine if isinstance(read_only, AsyncEngine) else read_only
    sa.event.listen(
        sync_read_only, "begin", lambda c: c.exec_driver_sql("SET TRANSACTION READ ONLY")
    )
    return engine, read_only
