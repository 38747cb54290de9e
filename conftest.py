"""Database backends for every test suite in this repository.

SQLite always runs. PostgreSQL and MariaDB run when ``TEST_POSTGRESQL_URL`` and
``TEST_MARIADB_URL`` are set; each pytest session (and each xdist worker) then gets a
scratch database of its own on that server, dropped at the end. With ``CI=true`` a URL
that is set but cannot be reached fails the run instead of skipping.

Two more ways to reach the PostgreSQL scratch database (``scripts/replica.sh start``):
``TEST_PGBOUNCER_URL`` (PgBouncer in transaction pooling mode, a fourth ``backend_url``)
and ``TEST_REPLICA_URL`` (a streaming replica, which replays the scratch database under the
same name; the ``replica_url`` fixture). In CI both must be set and reachable.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from flask_uow.testing import scratch_database

SERVER_BACKENDS = {"postgresql": "TEST_POSTGRESQL_URL", "mariadb": "TEST_MARIADB_URL"}
VIA_POSTGRESQL = {"pgbouncer": "TEST_PGBOUNCER_URL", "replica": "TEST_REPLICA_URL"}
"""Other servers in front of, or copied from, the PostgreSQL server: same scratch database."""
ALL_BACKENDS = ("sqlite", *SERVER_BACKENDS, "pgbouncer")
REPLICA_APPEARS_SECONDS = 30.0


@dataclass
class _ScratchDatabases:
    """Scratch databases created on the servers for this session, by backend name."""

    urls: dict[str, URL] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    unavailable_tests: dict[str, int] = field(default_factory=dict)
    cleanup: ExitStack = field(default_factory=ExitStack)


def _scratch_name() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"flask_uow_{worker}_{uuid.uuid4().hex[:8]}"


def pytest_configure(config: pytest.Config) -> None:
    scratch = _ScratchDatabases()
    config.stash[_SCRATCH] = scratch
    name = _scratch_name()
    for backend, variable in SERVER_BACKENDS.items():
        raw = os.environ.get(variable)
        if not raw:
            scratch.unavailable[backend] = f"{variable} is not set"
            continue
        base = make_url(raw)
        try:
            scratch.urls[backend] = scratch.cleanup.enter_context(scratch_database(base, name))
        except sa.exc.OperationalError as exc:
            reason = f"{variable}={base.render_as_string()} is unreachable: {exc.orig}"
            if os.environ.get("CI") == "true":
                raise pytest.UsageError(
                    f"{reason}. CI requires every configured backend; start the server or "
                    f"unset {variable}."
                ) from exc
            scratch.unavailable[backend] = reason
    for backend, variable in VIA_POSTGRESQL.items():
        _reach_via_postgresql(scratch, backend, variable)


NOT_BEHIND_PGBOUNCER = (
    "tests/reliability/",
    "tests/test_retries.py::test_a_connection_lost_during_commit_is_raised_not_retried",
)
"""Fault-injection tests that need a direct connection: they pass startup ``options`` (which
PgBouncer 1.18 refuses) or kill the server backend and expect the client connection to die
with it (behind PgBouncer the client connection outlives it). Not run on ``pgbouncer``."""

BEHIND_PGBOUNCER_TOO = ("tests/reliability/test_outbox_chaos.py",)
"""Reliability tests that do run on ``pgbouncer``: the outbox's chaos test is required there."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        behind = callspec is not None and callspec.params.get("backend_url") == "pgbouncer"
        excluded = item.nodeid.startswith(NOT_BEHIND_PGBOUNCER) and not item.nodeid.startswith(
            BEHIND_PGBOUNCER_TOO
        )
        (dropped if behind and excluded else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config.stash[_SCRATCH].unavailable_tests["pgbouncer"] = len(dropped)


def _reach_via_postgresql(scratch: _ScratchDatabases, backend: str, variable: str) -> None:
    raw = os.environ.get(variable)
    in_ci = os.environ.get("CI") == "true"
    if not raw or "postgresql" not in scratch.urls:
        why = f"{variable} is not set" if not raw else "TEST_POSTGRESQL_URL is not usable"
        if in_ci:
            raise pytest.UsageError(
                f"{why}. CI requires the replica and PgBouncer: run 'bash scripts/replica.sh "
                f"start' and set {variable} (see .ci/run)."
            )
        scratch.unavailable[backend] = why
        return
    url = make_url(raw).set(database=scratch.urls["postgresql"].database)
    error = _wait_until_reachable(url, REPLICA_APPEARS_SECONDS if backend == "replica" else 0)
    if error is None:
        scratch.urls[backend] = url
        return
    reason = f"{variable}={make_url(raw).render_as_string()} is unreachable: {error}"
    if in_ci:
        raise pytest.UsageError(
            f"{reason}. CI requires it: run 'bash scripts/replica.sh start' (see .ci/run)."
        )
    scratch.unavailable[backend] = reason


def _wait_until_reachable(url: URL, seconds: float) -> str | None:
    """Connect until it works (a replica shows a new database once it replays its creation)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                return None
            except sa.exc.OperationalError as exc:
                if time.monotonic() >= deadline:
                    return str(exc.orig).strip().splitlines()[0]
            time.sleep(0.1)
    finally:
        engine.dispose()


def pytest_unconfigure(config: pytest.Config) -> None:
    scratch = config.stash.get(_SCRATCH, None)
    if scratch is not None:
        scratch.cleanup.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    scratch = config.stash[_SCRATCH]
    lines = ["backends: sqlite (always)"]
    for backend, url in scratch.urls.items():
        lines.append(f"backends: {backend} on {url.render_as_string()}")
    for backend, reason in scratch.unavailable.items():
        lines.append(f"backends: {backend} SKIPPED ({reason})")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    scratch = terminalreporter.config.stash[_SCRATCH]
    ran = ["sqlite", *scratch.urls]
    terminalreporter.write_sep("=", "database backends")
    terminalreporter.write_line(f"ran on: {', '.join(ran)}")
    for backend, reason in scratch.unavailable.items():
        terminalreporter.write_line(f"skipped {backend}: {reason}")
    for backend, count in scratch.unavailable_tests.items():
        terminalreporter.write_line(
            f"not run on {backend}: {count} fault-injection tests that need a direct connection"
        )


_SCRATCH = pytest.StashKey[_ScratchDatabases]()


@pytest.fixture(params=ALL_BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL for each backend: a fresh SQLite file, or this session's scratch database."""
    backend: str = request.param
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        return f"sqlite:///{path}"
    scratch = request.config.stash[_SCRATCH]
    if backend not in scratch.urls:
        pytest.skip(f"{backend}: {scratch.unavailable[backend]}")
    return scratch.urls[backend].render_as_string(hide_password=False)


@pytest.fixture
def replica_url(request: pytest.FixtureRequest) -> str:
    """A streaming replica of this session's PostgreSQL scratch database (same name)."""
    scratch = request.config.stash[_SCRATCH]
    if "replica" not in scratch.urls:
        pytest.skip(f"replica: {scratch.unavailable['replica']}")
    return scratch.urls["replica"].render_as_string(hide_password=False)


@pytest.fixture
def pgbouncer_url(request: pytest.FixtureRequest) -> str:
    """This session's PostgreSQL scratch database reached through PgBouncer (transaction mode)."""
    scratch = request.config.stash[_SCRATCH]
    if "pgbouncer" not in scratch.urls:
        pytest.skip(f"pgbouncer: {scratch.unavailable['pgbouncer']}")
    return scratch.urls["pgbouncer"].render_as_string(hide_password=False)


@pytest.fixture
def primary_url(request: pytest.FixtureRequest) -> str:
    """This session's PostgreSQL scratch database, the one ``replica_url`` copies."""
    scratch = request.config.stash[_SCRATCH]
    if "postgresql" not in scratch.urls:
        pytest.skip(f"postgresql: {scratch.unavailable['postgresql']}")
    return scratch.urls["postgresql"].render_as_string(hide_password=False)


@pytest.fixture
def backend_name(backend_url: str) -> str:
    """The backend family of ``backend_url``: sqlite, postgresql (also via PgBouncer), mariadb."""
    dialect = make_url(backend_url).get_dialect().name
    return "mariadb" if dialect == "mysql" else dialect


@pytest.fixture
def server_url(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``server_url("postgresql")``: this session's scratch database there, or skip the test."""
    scratch = request.config.stash[_SCRATCH]

    def url(backend: str) -> str:
        if backend not in scratch.urls:
            pytest.skip(f"{backend}: {scratch.unavailable[backend]}")
        return scratch.urls[backend].render_as_string(hide_password=False)

    return url
