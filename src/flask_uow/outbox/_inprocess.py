"""Delivering in this process, off the caller's path: the broker-less lane.

With ``publish_locally()`` (or the in-process default, when no target was set), a unit's
messages are handed to one daemon thread per outbox after COMMIT; the unit's caller (a web
request) returns at once. The thread runs each task inside the app context of the unit that
committed it, then marks the rows in a short transaction. With ``relaying`` on, it also
relays leftovers every ``idle_seconds`` (a task that failed, messages a crashed process left
behind), in the app context of each app registered with the Database. Under
``flask_uow.testing.isolated()`` it leaves the test's connection alone: the outbox delivers
in the test's thread there. ``stop`` (``db.dispose()``) ends the thread once what was
handed over ran; the next message handed over starts another.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ._message import Message
from ._scopes import call_in, registered_apps

if TYPE_CHECKING:
    from ._outbox import Outbox

logger = logging.getLogger("flask_uow.outbox")

_Item = tuple[list[Message], "weakref.ref[object] | None"]


class InProcessDelivery:
    """The queue of committed messages to run here, and the thread that runs them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.idle_seconds = 1.0
        """How often leftovers are relayed when the thread has nothing else to do."""
        self.relaying = False
        """Whether the thread relays leftovers (``publish_locally(relay_thread=True)``)."""
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        """Set to end the running thread (each thread gets an Event of its own)."""
        self._lock = threading.Lock()
        self._failing = False

    def submit(self, messages: list[Message], app: object | None) -> None:
        """Run ``messages`` soon, in ``app``'s context; the caller does not wait."""
        reference = None if app is None else weakref.ref(app)
        self._queue.put((messages, reference))
        self.start()

    def start(self) -> None:
        """Start the thread if it is not running. It holds this object weakly and ends
        on ``stop`` or once the outbox (its Database) is garbage."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._stopping = threading.Event()
                    self._thread = threading.Thread(
                        target=_run,
                        args=(weakref.ref(self), self._queue, self._stopping),
                        name=f"flask-uow-outbox-local {self.outbox.db!r}",
                        daemon=True,
                    )
                    self._thread.start()

    def stop(self, timeout: float | None) -> bool:
        """Wait (at most ``timeout`` seconds) until what was handed over ran, then end the
        thread; False if a task was still running then (the thread ends after it; rows not
        marked stay for a relay). The next ``submit`` or ``wake`` starts a new thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            stopping = self._stopping
        if thread is None or not thread.is_alive():  # never started, or forked away
            return True
        if thread is threading.current_thread():  # a task disposing its own Database
            stopping.set()
            self._queue.put(([], None))
            return True
        done = self._wait(timeout)
        stopping.set()
        self._queue.put(([], None))  # the thread ends once it took an item: wake it
        if done:
            thread.join(timeout)
        return done

    def wake(self) -> None:
        """Relay leftovers now rather than at the next idle tick."""
        self._queue.put(([], None))
        self.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every message submitted so far ran (or failed); False if ``timeout``
        seconds passed first."""
        if self._queue.unfinished_tasks and self._thread is None:
            self.start()  # handed over while a stopped thread was ending
        return self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        waiting = self._queue
        with waiting.all_tasks_done:
            return waiting.all_tasks_done.wait_for(lambda: not waiting.unfinished_tasks, timeout)

    def deliver(self, messages: list[Message], app: object | None) -> None:
        try:
            call_in(app, lambda: self.outbox.deliver_here(messages))
        except Exception:
            logger.warning(
                "flask-uow outbox: running %d committed message(s) in process failed; the "
                "relay runs them once their lease ends",
                len(messages),
                exc_info=True,
            )

    def relay_leftovers(self, stopping: threading.Event | None = None) -> None:
        """Relay until nothing is due (or ``stopping`` is set: one batch more at most), in
        each registered app (each engine once)."""
        outbox = self.outbox
        if outbox.db.runtime.isolation is not None:
            return  # a test isolates the database: nothing commits, its thread relays
        seen: set[sa.Engine] = set()

        def relay() -> None:
            engine = outbox.db.engine
            if engine not in seen:
                seen.add(engine)
                while outbox.relay_once() and not (stopping is not None and stopping.is_set()):
                    pass

        try:
            for app in registered_apps(outbox.db):
                call_in(app, relay)
        except Exception:
            if not self._failing:
                logger.warning(
                    "flask-uow outbox: relaying leftovers in process failed; trying again "
                    "every %.1f s",
                    self.idle_seconds,
                    exc_info=True,
                )
            self._failing = True
            return
        self._failing = False


def _run(
    reference: weakref.ref[InProcessDelivery],
    waiting: queue.Queue[_Item],
    stopping: threading.Event,
) -> None:
    """The thread: run what units hand over; relay leftovers when idle (if relaying).

    Once ``stopping`` is set it ends after taking one more item (``stop`` puts one, so
    that it does not stay in the queue), or after an idle wait if a thread started since
    took that item."""
    next_relay = time.monotonic()
    while True:
        delivery = reference()
        if delivery is None:
            return
        idle = delivery.idle_seconds
        timeout = max(0.0, next_relay - time.monotonic()) if delivery.relaying else idle
        del delivery  # not held while waiting: the outbox may be collected meanwhile
        try:
            messages, app = waiting.get(timeout=timeout)
        except queue.Empty:
            if stopping.is_set():
                return  # a thread started since took the item stop() put
            messages, app = [], None
        else:
            try:
                delivery = reference()
                if delivery is not None and messages:
                    delivery.deliver(messages, None if app is None else app())
            finally:
                waiting.task_done()
            if stopping.is_set():
                return
            if messages:
                continue
            next_relay = time.monotonic()
        delivery = reference()
        if delivery is not None and delivery.relaying and time.monotonic() >= next_relay:
            delivery.relay_leftovers(stopping)
            next_relay = time.monotonic() + delivery.idle_seconds
        del delivery
