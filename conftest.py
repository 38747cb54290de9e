"""Database backends for every test suite in this repository.

SQLite always runs. PostgreSQL and MariaDB run when ``TEST_POSTGRESQL_URL`` and
``TEST_MARIADB_URL`` are set; each pytest session (and each xdist worker) then gets a
scratch database of its own on that server, dropped at the end. With ``CI=true`` a URL
that is set but cannot be reached fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from flask_uow.testing import scratch_database

SERVER_BACKENDS = {"postgresql": "TEST_POSTGRESQL_URL", "mariadb": "TEST_MARIADB_URL"}
ALL_BACKENDS = ("sqlite", *SERVER_BACKENDS)


@dataclass
class _ScratchDatabases:
    """Scratch databases created on the servers for this session, by backend name."""

    urls: dict[str, URL] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
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
def backend_name(backend_url: str) -> str:
    """The backend family of ``backend_url``: sqlite, postgresql or mariadb."""
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
