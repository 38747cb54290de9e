"""Marking immediately published messages in batches, off the committing thread.

After the broker confirmed a unit's messages, the immediate lane hands their ids here
instead of running one more transaction in the caller's thread. A daemon thread marks what
has gathered in one short transaction per engine, at most ``interval`` seconds later. If
the process dies first, the rows' leases end and a relay publishes them again: delivery
stays at least once, and consumers deduplicate by message id. ``stop`` marks what is
waiting and ends the thread (``db.dispose()``); the next ids handed in start another.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

logger = logging.getLogger("flask_uow.outbox")

Mark = Callable[[sa.Connection, list[str]], None]


class Marker:
    """Ids waiting to be marked published, per engine, and the thread that marks them."""

    def __init__(
        self, mark: Mark, *, interval: float = 0.05, name: str = "flask-uow-outbox-marker"
    ) -> None:
        self.mark = mark
        self.interval = interval
        self.name = name
        """The thread's name."""
        self._waiting: dict[sa.Engine, list[str]] = {}
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._busy = False
        atexit.register(self.flush)

    def add(self, engine: sa.Engine, ids: list[str]) -> None:
        with self._condition:
            self._waiting.setdefault(engine, []).extend(ids)
            if self._thread is None:
                self._stopping = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stopping,), name=self.name, daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    def stop(self) -> None:
        """Mark what is waiting (in the calling thread) and end the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():  # never started, or forked away
            self._thread = None
            return
        with self._condition:
            self._thread = None
            self._stopping.set()
            self._condition.notify_all()
        self.flush()
        if thread is not threading.current_thread():
            thread.join()

    def flush(self) -> None:
        """Mark everything handed in so far before returning (in the calling thread)."""
        with self._condition:
            waiting, self._waiting = self._waiting, {}
            while self._busy:  # the thread is marking an earlier batch
                self._condition.wait()
        self._mark(waiting)

    def _run(self, stopping: threading.Event) -> None:
        while True:
            with self._condition:
                while not self._waiting and not stopping.is_set():
                    self._condition.wait()
            if stopping.is_set():
                return  # stop() marks what is waiting
            time.sleep(self.interval)  # let a batch gather
            with self._condition:
                waiting, self._waiting = self._waiting, {}
                self._busy = True
            try:
                self._mark(waiting)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _mark(self, waiting: dict[sa.Engine, list[str]]) -> None:
        for engine, ids in waiting.items():
            try:
                with engine.begin() as connection:
                    self.mark(connection, ids)
            except Exception:
                logger.warning(
                    "flask-uow outbox: marking %d published message(s) failed; relays "
                    "will publish them again once their lease ends",
                    len(ids),
                    exc_info=True,
                )
