"""Reading a Flask app's configuration for flask-uow, without importing Flask.

Flask-SQLAlchemy's ``SQLALCHEMY_DATABASE_URI``, ``SQLALCHEMY_ENGINE_OPTIONS`` and
``SQLALCHEMY_ECHO`` are accepted when the ``UOW_*`` key is absent, with a warning, so that
a config left over from a port never points the app (and its tests) at another database
silently. Unknown ``UOW_*`` keys warn with the nearest valid name.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ._errors import UnitOfWorkError, UnitOfWorkWarning
from ._replicas import DEFAULT_MAX_LAG, DEFAULT_MAX_WAIT

KNOWN_KEYS = frozenset(
    {
        "UOW_DATABASE_URL",
        "UOW_ASYNC_DATABASE_URL",
        "UOW_ENGINE_OPTIONS",
        "UOW_SESSION_OPTIONS",
        "UOW_SESSION_COMMIT",
        "UOW_PER_REQUEST",
        "UOW_PER_REQUEST_READ_ONLY_METHODS",
        "UOW_SQLITE_FOREIGN_KEYS",
        "UOW_SQLITE_WAL",
        "UOW_REPLICA_URLS",
        "UOW_REPLICA_MAX_LAG",
        "UOW_REPLICA_MAX_WAIT",
        "UOW_STATEMENT_TIMEOUT",
        "UOW_LOCK_TIMEOUT",
        "UOW_WARN_IDLE_MS",
        "UOW_OTEL",
    }
)
"""Every ``UOW_*`` config key flask-uow reads."""

_FALLBACKS = {
    "SQLALCHEMY_DATABASE_URI": "UOW_DATABASE_URL",
    "SQLALCHEMY_ENGINE_OPTIONS": "UOW_ENGINE_OPTIONS",
    "SQLALCHEMY_ECHO": "UOW_ENGINE_OPTIONS['echo']",
}


@dataclass(frozen=True)
class AppConfig:
    """What one app configured, read once at ``init_app``."""

    url: URL
    async_url: URL | None
    engine_options: dict[str, Any]
    session_options: dict[str, Any] | None
    per_request: bool
    read_only_methods: frozenset[str]
    sqlite_foreign_keys: bool
    sqlite_wal: bool
    statement_timeout: Any = None
    lock_timeout: Any = None
    warn_idle_ms: float | None = None
    otel: bool = False
    session_commit: str | None = None
    replica_urls: tuple[str, ...] = ()
    """``UOW_REPLICA_URLS``: a list of URLs, or one string of URLs separated by spaces or commas."""
    replica_max_lag: float = DEFAULT_MAX_LAG
    replica_max_wait: float = DEFAULT_MAX_WAIT
    """``UOW_REPLICA_MAX_LAG`` and ``UOW_REPLICA_MAX_WAIT``, in seconds."""


def read_config(
    config: Mapping[str, Any],
    *,
    instance_path: str,
    default_url: URL | None,
    default_engine_options: Mapping[str, Any],
    default_sqlite_foreign_keys: bool = True,
    default_sqlite_wal: bool = True,
    debug: bool = False,
) -> AppConfig:
    """Read flask-uow's keys from an app config, warning about keys that look wrong."""
    _warn_unknown_keys(config)
    used_fallbacks = [key for key in _FALLBACKS if key in config]
    url_value = config.get("UOW_DATABASE_URL")
    legacy_url = config.get("SQLALCHEMY_DATABASE_URI")
    if url_value and legacy_url and sa.make_url(url_value) != sa.make_url(legacy_url):
        raise UnitOfWorkError(
            "Both UOW_DATABASE_URL and SQLALCHEMY_DATABASE_URI are set, to different "
            "databases. flask-uow reads UOW_DATABASE_URL; remove SQLALCHEMY_DATABASE_URI (a "
            "leftover of Flask-SQLAlchemy) so that nobody is misled about which one is used."
        )
    engine_options = dict(default_engine_options)
    if "UOW_ENGINE_OPTIONS" in config:
        engine_options.update(config["UOW_ENGINE_OPTIONS"])
    else:
        engine_options.update(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if config.get("SQLALCHEMY_ECHO") and "echo" not in engine_options:
        engine_options["echo"] = config["SQLALCHEMY_ECHO"]
    raw_url = url_value or legacy_url or default_url
    url = sa.make_url(raw_url) if raw_url else default_sqlite_url(instance_path)
    if used_fallbacks:
        taken = ", ".join(f"{key} as {_FALLBACKS[key]}" for key in used_fallbacks)
        warnings.warn(
            f"flask-uow read Flask-SQLAlchemy config keys: {taken}. Rename them to the UOW_* "
            "keys (see docs/migrating.md) to silence this warning.",
            UnitOfWorkWarning,
            stacklevel=4,
        )
    if config.get("SQLALCHEMY_BINDS"):
        raise UnitOfWorkError(
            "SQLALCHEMY_BINDS is set, and flask-uow has no binds: make one Database per "
            "database (each with its own URL and units) and compose their units; see "
            "docs/migrating.md."
        )
    return AppConfig(
        url=resolve_sqlite_path(url, instance_path),
        async_url=(
            resolve_sqlite_path(sa.make_url(config["UOW_ASYNC_DATABASE_URL"]), instance_path)
            if config.get("UOW_ASYNC_DATABASE_URL")
            else None
        ),
        engine_options=engine_options,
        session_options=config.get("UOW_SESSION_OPTIONS") or None,
        per_request=bool(config.get("UOW_PER_REQUEST", False)),
        read_only_methods=frozenset(
            method.upper() for method in config.get("UOW_PER_REQUEST_READ_ONLY_METHODS", ())
        ),
        sqlite_foreign_keys=bool(
            config.get("UOW_SQLITE_FOREIGN_KEYS", default_sqlite_foreign_keys)
        ),
        sqlite_wal=bool(config.get("UOW_SQLITE_WAL", default_sqlite_wal)),
        statement_timeout=config.get("UOW_STATEMENT_TIMEOUT"),
        lock_timeout=config.get("UOW_LOCK_TIMEOUT"),
        warn_idle_ms=idle_threshold(config, debug),
        otel=bool(config.get("UOW_OTEL", False)),
        session_commit=config.get("UOW_SESSION_COMMIT"),
        replica_urls=replica_urls(config.get("UOW_REPLICA_URLS")),
        replica_max_lag=float(config.get("UOW_REPLICA_MAX_LAG", DEFAULT_MAX_LAG)),
        replica_max_wait=float(config.get("UOW_REPLICA_MAX_WAIT", DEFAULT_MAX_WAIT)),
    )


def replica_urls(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``UOW_REPLICA_URLS`` as a tuple: a string is split at spaces and commas."""
    if isinstance(value, str):
        return tuple(value.replace(",", " ").split())
    return tuple(value or ())


DEBUG_WARN_IDLE_MS = 100.0
"""The idle-in-transaction warning threshold of an app in debug mode that sets none."""


def idle_threshold(config: Mapping[str, Any], debug: bool) -> float | None:
    """``UOW_WARN_IDLE_MS``: None or absent means on in debug mode only; 0 or False, off."""
    value = config.get("UOW_WARN_IDLE_MS")
    if value is None:
        return DEBUG_WARN_IDLE_MS if debug else None
    if value is False or value == 0:
        return None
    if value is True:
        return DEBUG_WARN_IDLE_MS
    if not isinstance(value, int | float) or value < 0:
        raise UnitOfWorkError(
            f"UOW_WARN_IDLE_MS takes milliseconds (a positive number) or False, got {value!r}."
        )
    return float(value)


def _warn_unknown_keys(config: Mapping[str, Any]) -> None:
    for key in config:
        if isinstance(key, str) and key.startswith("UOW_") and key not in KNOWN_KEYS:
            nearest = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
            hint = f" Did you mean {nearest[0]}?" if nearest else ""
            warnings.warn(
                f"flask-uow does not know the config key {key!r}; it is ignored.{hint} "
                f"Known keys: {', '.join(sorted(KNOWN_KEYS))}.",
                UnitOfWorkWarning,
                stacklevel=5,
            )


def default_sqlite_url(instance_path: str) -> URL:
    """``sqlite:///<instance folder>/app.db``, creating the instance folder."""
    os.makedirs(instance_path, exist_ok=True)
    return sa.make_url("sqlite:///" + os.path.join(instance_path, "app.db"))


def resolve_sqlite_path(url: URL, instance_path: str) -> URL:
    """Make a relative SQLite file path relative to the app's instance folder.

    As in Flask-SQLAlchemy 3, ``sqlite:///app.db`` is ``<instance folder>/app.db`` whatever
    the working directory; absolute paths, in-memory databases and ``file:`` URIs are kept.
    """
    if url.get_backend_name() != "sqlite":
        return url
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    if os.path.isabs(database):
        return url
    os.makedirs(instance_path, exist_ok=True)
    return url.set(database=os.path.join(instance_path, database))
