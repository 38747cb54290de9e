"""The immediate lane's publisher thread: units hand over their messages and return.

Waiting for a broker's confirmation takes a round trip to the broker (and its disk); a
unit's caller should not pay it. After COMMIT the unit's messages are queued here, and
one daemon thread per outbox publishes them in order, batching what gathered while it
waited. If the process dies with messages still queued, their rows' leases end and
relays publish them. ``stop`` ends the thread once what was handed over is published
(``db.dispose()``); the next unit's messages start another.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import sqlalchemy as sa

from ._message import Message

logger = logging.getLogger("flask_uow.outbox")

Deliver = Callable[[list[Message], sa.Engine], None]
_Item = tuple[list[Message], sa.Engine] | None
"""Messages to publish and their engine, or None: look at the stop signal."""
_BATCH = 500
_IDLE_SECONDS = 1.0
"""How often an idle thread looks whether it was stopped (``stop`` also wakes it)."""


class BackgroundPublisher:
    """A queue of committed messages and the thread that publishes them."""

    def __init__(self, deliver: Deliver, *, name: str = "flask-uow-outbox-publisher") -> None:
        self.deliver = deliver
        self.name = name
        """The thread's name."""
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def submit(self, messages: list[Message], engine: sa.Engine) -> None:
        self._queue.put((messages, engine))
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._stopping = threading.Event()
                    self._thread = threading.Thread(
                        target=self._run, args=(self._stopping,), name=self.name, daemon=True
                    )
                    self._thread.start()

    def join(self) -> None:
        """Wait until everything submitted so far was published (or failed)."""
        if self._thread is not None:
            self._queue.join()

    def stop(self, timeout: float | None) -> bool:
        """Wait (at most ``timeout`` seconds) until what was handed over was published,
        then end the thread; False if it was still publishing then (it ends after that
        batch; rows not marked are relayed once their lease ends)."""
        with self._lock:
            thread, self._thread = self._thread, None
            stopping = self._stopping
        if thread is None or not thread.is_alive():  # never started, or forked away
            return True
        waiting = self._queue
        if thread is not threading.current_thread():
            with waiting.all_tasks_done:
                done = waiting.all_tasks_done.wait_for(
                    lambda: not waiting.unfinished_tasks, timeout
                )
        else:
            done = True
        stopping.set()
        waiting.put(None)  # the thread ends once it took an item: wake it
        if done and thread is not threading.current_thread():
            thread.join(timeout)
        return done

    def _run(self, stopping: threading.Event) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=_IDLE_SECONDS)]
            except queue.Empty:
                if stopping.is_set():
                    return  # a thread started since took the item stop() put
                continue
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_engine: dict[sa.Engine, list[Message]] = {}
            for item in items:
                if item is not None:
                    by_engine.setdefault(item[1], []).extend(item[0])
            for engine, messages in by_engine.items():
                try:
                    self.deliver(messages, engine)
                except Exception:
                    logger.warning(
                        "flask-uow outbox: publishing %d committed message(s) failed; a "
                        "relay will publish them once their lease ends",
                        len(messages),
                        exc_info=True,
                    )
            for _ in items:
                self._queue.task_done()
            if stopping.is_set():
                return
