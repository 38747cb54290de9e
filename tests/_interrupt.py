"""Interrupting a unit while its COMMIT is on its way: a proxy that holds COMMIT's answer back,
and, on SQLite (no server to put a proxy in front of), a listener that commits and then waits.

In both, the COMMIT reaches the database and commits; only the answer is late, so whatever
interrupts the unit then (a SIGINT, a loop shutting down) leaves an outcome that nobody knows.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.util import await_only

from .reliability._proxy import TcpProxy

_COMMIT = re.compile(rb"(?<![A-Z_])COMMIT\b")
"""COMMIT as a statement, not a part of a word (MariaDB's SET autocommit)."""

HOLD_SECONDS = 30.0
"""How long an answer to COMMIT is held at most (a test releases it long before)."""


class CommitAnswerHoldingProxy(TcpProxy):
    """A TCP proxy that, while ``holding``, keeps the server's answer to a COMMIT from the client.

    ``commit_sent`` is set when the COMMIT has gone through to the server; the answer is
    forwarded once ``release()`` is called (or after ``HOLD_SECONDS``).
    """

    statement = _COMMIT
    """The statement whose answer is held (a subclass may hold ROLLBACK's instead)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        super().__init__(upstream_port, upstream_host)
        self.holding = False
        self.commit_sent = threading.Event()
        self._released = threading.Event()
        self._committing: set[socket.socket] = set()

    def release(self) -> None:
        """Forward the held answers, and every answer after them."""
        self.holding = False
        self._released.set()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        from_client = source.getsockname()[1] == self.port
        client = source if from_client else target
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and self.holding and self.statement.search(data.upper()):
                    self._committing.add(client)
                    target.sendall(data)
                    self.commit_sent.set()
                    continue
                if not from_client and client in self._committing:
                    self._released.wait(HOLD_SECONDS)
                    self._committing.discard(client)
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(target)


class RollbackAnswerHoldingProxy(CommitAnswerHoldingProxy):
    """Holds back the answer to a ROLLBACK instead (``commit_sent``: ROLLBACK was sent)."""

    statement = re.compile(rb"(?<![A-Z_])ROLLBACK\b")


@contextmanager
def holding_proxy(
    backend_url: str, proxy_class: type[CommitAnswerHoldingProxy] = CommitAnswerHoldingProxy
) -> Iterator[tuple[str, CommitAnswerHoldingProxy]]:
    """A proxy in front of the server of ``backend_url``, and the URL that goes through it."""
    url = make_url(backend_url)
    proxy = proxy_class(url.port or 5432, url.host or "127.0.0.1")
    with proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        try:
            yield proxied.render_as_string(hide_password=False), proxy
        finally:
            proxy.release()


def sigint_main_thread() -> None:
    """Send SIGINT to the main thread, whose default handler raises KeyboardInterrupt there."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


def sigint_once_commit_is_sent(proxy: CommitAnswerHoldingProxy) -> threading.Thread:
    """A thread that sends SIGINT to the main thread once COMMIT has reached the server."""

    def interrupt() -> None:
        if proxy.commit_sent.wait(HOLD_SECONDS):
            sigint_main_thread()

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    return thread


@contextmanager
def after_sqlite_commit(engine: sa.Engine, then: Callable[[], Any]) -> Iterator[None]:
    """On ``engine`` (SQLite), COMMIT for real in a ``commit`` listener, then call ``then()``.

    A stand-in for a server whose answer to COMMIT is late: the transaction is committed when
    ``then()`` interrupts the unit, and SQLAlchemy still believes COMMIT is under way.
    """

    def commit_then(connection: sa.Connection) -> None:
        connection.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        then()

    event.listen(engine, "commit", commit_then)
    try:
        yield
    finally:
        event.remove(engine, "commit", commit_then)


def await_forever(reached: Callable[[], None]) -> Callable[[], None]:
    """A ``then`` for async SQLite: say COMMIT landed, then await until cancelled."""
    import asyncio

    def wait() -> None:
        reached()
        await_only(asyncio.sleep(HOLD_SECONDS))

    return wait
