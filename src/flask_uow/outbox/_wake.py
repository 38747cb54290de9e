"""Waking an idle relay: LISTEN/NOTIFY on PostgreSQL, polling everywhere else.

A unit that commits relay-lane messages on PostgreSQL sends ``NOTIFY flask_uow_outbox``
in the same statement as its INSERT (no extra round trip); the notification is delivered
at COMMIT. An idle relay LISTENs on a connection of its own, outside the pool, and claims
as soon as one arrives. Behind PgBouncer in transaction mode LISTEN cannot work (the
session that listens is not kept), so relays there poll every ``idle_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import sqlalchemy as sa

from .._pgbouncer import behind_pooler

CHANNEL = "flask_uow_outbox"
logger = logging.getLogger("flask_uow.outbox")


class Waiter(Protocol):
    @property
    def kind(self) -> str:
        """``listen`` or ``poll``: how the relay is woken."""

    def wait(self, seconds: float) -> None: ...

    def close(self) -> None: ...


class PollingWaiter:
    """Sleeps ``seconds`` (or until stopping)."""

    kind = "poll"

    def __init__(self, stopping: threading.Event) -> None:
        self.stopping = stopping

    def wait(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def close(self) -> None:
        pass


class ListeningWaiter:
    """Waits for a NOTIFY on ``CHANNEL`` (at most ``seconds``) on a dedicated connection."""

    kind = "listen"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def wait(self, seconds: float) -> None:
        for _ in self.connection.notifies(timeout=seconds, stop_after=1):
            break

    def close(self) -> None:
        self.connection.close()


class ReconnectingWaiter:
    """LISTENs when it can, polls meanwhile: a database that is down (at start or later)
    is tried again after a backoff (doubling up to ``MAX_RETRY_SECONDS``), logged each time."""

    MAX_RETRY_SECONDS = 30.0

    def __init__(self, engine: sa.Engine, stopping: threading.Event) -> None:
        self.engine = engine
        self.polling = PollingWaiter(stopping)
        self.listening: Waiter | None = None
        self.retry_at = 0.0
        self.failures = 0
        self._current()  # LISTEN now if the database answers

    @property
    def kind(self) -> str:
        """``listen`` while a LISTEN connection is open, else ``poll``."""
        return "poll" if self.listening is None else self.listening.kind

    def wait(self, seconds: float) -> None:
        waiter = self._current()
        try:
            waiter.wait(seconds)
        except Exception:  # the LISTEN connection was lost: poll until it comes back
            logger.warning("flask-uow outbox relay: lost its LISTEN connection", exc_info=True)
            self._drop()
            self.polling.wait(seconds)

    def _current(self) -> Waiter:
        if self.listening is not None:
            return self.listening
        if time.monotonic() < self.retry_at:
            return self.polling
        try:
            self.listening = _listening_waiter(self.engine, self.polling.stopping)
        except Exception as error:
            self.failures += 1
            delay = min(self.MAX_RETRY_SECONDS, 2.0 ** (self.failures - 1))
            self.retry_at = time.monotonic() + delay
            logger.warning(
                "flask-uow outbox relay: cannot LISTEN on %s (%s); polling, trying again in %.0f s",
                self.engine.url,
                error,
                delay,
            )
            return self.polling
        self.failures = 0
        return self.listening

    def _drop(self) -> None:
        if self.listening is not None:
            try:
                self.listening.close()
            except Exception:
                pass
            self.listening = None

    def close(self) -> None:
        self._drop()


def waiter_for(engine: sa.Engine, stopping: threading.Event) -> Waiter:
    """LISTEN where it works (PostgreSQL with psycopg, no pooler), else polling.

    Never raises: a PostgreSQL that cannot be reached yet is polled, and LISTEN is tried
    again later (see ``ReconnectingWaiter``).
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return PollingWaiter(stopping)
    return ReconnectingWaiter(engine, stopping)


def _listening_waiter(engine: sa.Engine, stopping: threading.Event) -> Waiter:
    """A connection of its own LISTENing on ``CHANNEL``, or polling behind a pooler."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    connection = engine.dialect.loaded_dbapi.connect(*cargs, autocommit=True, **cparams)
    try:
        if behind_pooler(connection):
            connection.close()
            logger.info("flask-uow outbox relay: behind a pooler, polling instead of LISTEN")
            return PollingWaiter(stopping)
        connection.execute(f"LISTEN {CHANNEL}")
    except BaseException:
        connection.close()
        raise
    return ListeningWaiter(connection)


def notifying(statement: sa.Insert) -> sa.Executable:
    """``statement`` plus ``pg_notify`` in one statement: a data-modifying WITH."""
    inserted = statement.cte("flask_uow_outbox_inserted")
    return sa.select(sa.func.pg_notify(CHANNEL, "")).add_cte(inserted)
