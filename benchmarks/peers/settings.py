"""Settings the benchmark harness hands to every app through the environment."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

HOLD_SECONDS = 0.05
"""How long ``/bench/hold`` waits on its simulated external service."""


def database_url() -> str:
    try:
        return os.environ["BENCH_DATABASE_URL"]
    except KeyError:
        raise RuntimeError(
            "BENCH_DATABASE_URL is not set; the apps in benchmarks.peers are started by "
            "benchmarks/http.py, which creates a scratch database and sets it"
        ) from None


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
    options: dict[str, Any] = {
        "pool_size": int(os.environ.get("BENCH_POOL_SIZE", "8")),
        "max_overflow": 0,
        "pool_timeout": 30,
    }
    if database_url().startswith("postgresql"):
        options["connect_args"] = {"application_name": os.environ.get("BENCH_APP_NAME", "bench")}
    return options
