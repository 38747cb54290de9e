"""Answer deadlines: a connection whose server stays silent too long is cut from this side.

A server that stops answering (a frozen process, a network that swallows packets) leaves
the client waiting on an open socket forever: ``connect_timeout`` covers connecting only,
and neither TCP keepalives nor ``statement_timeout`` end a wait for a server that is alive
to the kernel but sends nothing. While a connection waits for an answer it is *armed* here
with a deadline; one watcher thread per process shuts the socket down when the deadline
passes. The driver then sees the server hang up: the statement fails as a lost connection,
which SQLAlchemy reports as a disconnect and the pool replaces.

Arming is a dict assignment, disarming a dict pop: no lock, no thread wake-up, no round trip.
A connection lost while armed (its driver closed the socket, and the number may now be
another connection's, of any engine) is never cut: the watcher hangs up only a socket
that its driver connection still reports as its own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

TICK_SECONDS = 0.05
"""How often the watcher looks for passed deadlines: the precision of every deadline."""


class AnswerDeadlines:
    """Deadlines of connections waiting for their server, and the thread that enforces them."""

    def __init__(self) -> None:
        # id(driver connection) -> (due, socket number, the driver connection): the entry holds
        # the connection, so that neither its id nor, while it is open, its socket is reused.
        self._due: dict[int, tuple[float, int, Any]] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def arm(self, driver_connection: Any, seconds: float) -> None:
        """From now, ``driver_connection`` must hear from its server within ``seconds``."""
        number = _socket_of(driver_connection)
        if number is None:
            return  # no socket shown (another driver), or lost already: nothing to wait for
        if self._thread is None:
            self._start()
        self._due[id(driver_connection)] = (time.monotonic() + seconds, number, driver_connection)

    def disarm(self, driver_connection: Any) -> None:
        """``driver_connection`` has its answer (or is gone): no deadline any more."""
        self._due.pop(id(driver_connection), None)

    def armed(self) -> int:
        """How many connections are waiting under a deadline now."""
        return len(self._due)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._watch, name="flask-uow answer deadlines", daemon=True
                )
                thread.start()
                self._thread = thread

    def _watch(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            for key, entry in list(self._due.items()):
                if entry[0] > now:
                    continue
                current = self._due.pop(key, None)
                if current is entry:
                    _hang_up(entry[2], entry[1])
                elif current is not None:  # answered and waiting again since: not due yet
                    self._due.setdefault(key, current)


def _socket_of(driver_connection: Any) -> int | None:
    """The number of the socket ``driver_connection`` talks on, or None if it has none now."""
    fileno = getattr(driver_connection, "fileno", None)
    if fileno is None:
        return None
    try:
        number = fileno()
    except Exception:  # psycopg: "the connection is lost"; PyMySQL: closed, no socket
        return None
    return number if isinstance(number, int) and number >= 0 else None


def _hang_up(driver_connection: Any, number: int) -> None:
    # Shut the socket down (for every descriptor of it, the driver's included) through a
    # duplicate, which is ours to close: the driver's wait wakes up to an end of stream.
    # Only while the driver still owns that number, before and after it is duplicated: a
    # driver that closed its socket frees the number for the next socket of the process.
    if _socket_of(driver_connection) != number:
        return
    try:
        duplicate = socket.socket(fileno=os.dup(number))
    except OSError:
        return  # already closed
    try:
        if _socket_of(driver_connection) == number:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


DEADLINES = AnswerDeadlines()
"""The process's deadlines (one watcher thread, started when first needed)."""
