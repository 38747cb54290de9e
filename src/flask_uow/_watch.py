"""Following what outermost units do with their connection: statements, hold and idle time.

Nothing here runs unless something asks for it (the idle-in-transaction warning,
OpenTelemetry, the debug toolbar panel): then one ``Watcher`` observes the Database's
units and listens to the statements of the engines they run on. Each outermost unit gets
a ``UnitTrace`` while it runs; the watcher's consumers are told when units begin and
end, with the trace complete.

Idle time is the time a unit holds its connection in a transaction while no statement
runs: between two statements, and between its last statement and its COMMIT or ROLLBACK.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection

from ._lifecycle import KIND_OUTERMOST
from ._unit import current_unit

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._unit import UnitOfWork

_SKIPPED_DIRECTORIES = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(sa.__file__)) + os.sep,
)


_GENERATED = ("<frozen", "<sqlalchemy", "<string>")
"""Code without a file: the import system, and SQLAlchemy's generated wrappers (2.1, 2.0)."""


def caller_location(skip: tuple[str, ...] = ()) -> str | None:
    """``file:line in function`` of the innermost frame outside flask-uow and SQLAlchemy."""
    frame = sys._getframe(1)
    skipped = _SKIPPED_DIRECTORIES + skip
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(skipped) and not filename.startswith(_GENERATED):
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


class UnitTrace:
    """What one outermost unit did with its connection. Times are ``perf_counter()`` seconds."""

    __slots__ = (
        "entered",
        "ended",
        "acquired",
        "released",
        "statements",
        "statement_time",
        "idle_time",
        "idle_gaps",
        "longest_idle",
        "longest_idle_ended_at",
        "_last_end",
        "_started",
    )

    def __init__(self, entered: float) -> None:
        self.entered = entered
        """When the unit was entered."""
        self.ended: float | None = None
        """When the unit ended (after its COMMIT or ROLLBACK and closing its session)."""
        self.acquired: float | None = None
        """When its first statement started: the connection was held from then on."""
        self.released: float | None = None
        """When it sent COMMIT or ROLLBACK (the end of its idle time)."""
        self.statements = 0
        """Statements sent (BEGIN, SAVEPOINT and flushes included; COMMIT not)."""
        self.statement_time = 0.0
        """Seconds spent inside statements."""
        self.idle_time = 0.0
        """Seconds the connection was held in the transaction with no statement running."""
        self.idle_gaps: list[tuple[float, str | None]] = []
        """Gaps longer than the watcher's threshold: (seconds, where the gap ended)."""
        self.longest_idle = 0.0
        """The longest single gap, in seconds."""
        self.longest_idle_ended_at: str | None = None
        """Where the longest gap over the threshold ended, when one was."""
        self._last_end: float | None = None
        self._started: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from entering the unit to its end."""
        return None if self.ended is None else self.ended - self.entered

    @property
    def hold_time(self) -> float:
        """Seconds the unit held a connection (0 when it ran no SQL)."""
        if self.acquired is None:
            return 0.0
        end = self.ended if self.ended is not None else perf_counter()
        return end - self.acquired


class TraceConsumer(Protocol):
    """Told of units as the watcher sees them; must be cheap and must not raise."""

    def unit_entered(self, unit: UnitOfWork) -> None: ...

    def unit_ended(self, unit: UnitOfWork, trace: UnitTrace | None) -> None: ...

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None: ...


class Watcher:
    """Observes one Runtime's units and the statements of their engines, for its consumers."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.consumers: tuple[TraceConsumer, ...] = ()
        self.idle_threshold: float | None = None
        """Seconds; gaps longer than this are listed with where they ended."""
        self._engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._traces: dict[UnitOfWork, UnitTrace] = {}

    # -- consumers -----------------------------------------------------------------------

    def add(self, consumer: TraceConsumer) -> None:
        self.consumers = (*self.consumers, consumer)

    def remove(self, consumer: TraceConsumer) -> None:
        self.consumers = tuple(other for other in self.consumers if other is not consumer)

    # -- UnitObserver --------------------------------------------------------------------

    def unit_entered(self, unit: UnitOfWork) -> None:
        if unit.kind is KIND_OUTERMOST:
            self._traces[unit] = UnitTrace(perf_counter())
            engine = unit.engine
            if engine is not None and engine not in self._engines:
                self._watch(engine)
        for consumer in self.consumers:
            consumer.unit_entered(unit)

    def unit_ended(self, unit: UnitOfWork) -> None:
        trace = self._traces.pop(unit, None)
        if trace is not None:
            now = perf_counter()
            if trace.released is None:
                self._end_gap(trace, now)
            trace.ended = now
        for consumer in self.consumers:
            consumer.unit_ended(unit, trace)

    def unit_retrying(self, unit: UnitOfWork, error: BaseException, attempt: int) -> None:
        for consumer in self.consumers:
            consumer.unit_retrying(unit, error, attempt)

    # -- statements ----------------------------------------------------------------------

    def _watch(self, engine: sa.Engine) -> None:
        with self._lock:
            if engine in self._engines:
                return
            event.listen(engine, "before_cursor_execute", self._before)
            event.listen(engine, "after_cursor_execute", self._after)
            event.listen(engine, "handle_error", self._failed)
            event.listen(engine, "commit", self._ending)
            event.listen(engine, "rollback", self._ending)
            self._engines.add(engine)

    def close(self) -> None:
        """Stop listening to every engine."""
        with self._lock:
            for engine in list(self._engines):
                event.remove(engine, "before_cursor_execute", self._before)
                event.remove(engine, "after_cursor_execute", self._after)
                event.remove(engine, "handle_error", self._failed)
                event.remove(engine, "commit", self._ending)
                event.remove(engine, "rollback", self._ending)
            self._engines = weakref.WeakSet()

    def _trace(self) -> UnitTrace | None:
        unit = current_unit(self.runtime)
        if unit is None:
            return None
        return self._traces.get(unit.root)

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        trace = self._trace()
        if trace is None:
            return
        now = perf_counter()
        if trace.acquired is None:
            trace.acquired = now
        elif trace._last_end is not None:
            self._gap(trace, now - trace._last_end)
        trace._started = now

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        trace = self._trace()
        if trace is None or trace._started is None:
            return
        now = perf_counter()
        trace.statements += 1
        trace.statement_time += now - trace._started
        trace._started = None
        trace._last_end = now

    def _failed(self, context: Any) -> None:
        trace = self._trace()
        if trace is None or trace._started is None:
            return
        now = perf_counter()
        trace.statements += 1
        trace.statement_time += now - trace._started
        trace._started = None
        trace._last_end = now

    def _ending(self, conn: Connection) -> None:
        trace = self._trace()
        if trace is not None and trace.released is None:
            self._end_gap(trace, perf_counter())

    def _end_gap(self, trace: UnitTrace, now: float) -> None:
        trace.released = now
        if trace._last_end is not None:
            self._gap(trace, now - trace._last_end)
            trace._last_end = None

    def _gap(self, trace: UnitTrace, seconds: float) -> None:
        trace.idle_time += seconds
        if seconds > trace.longest_idle:
            trace.longest_idle = seconds
        threshold = self.idle_threshold
        if threshold is not None and seconds > threshold:
            where = caller_location()
            trace.idle_gaps.append((seconds, where))
            if seconds >= trace.longest_idle:
                trace.longest_idle_ended_at = where


def watcher_for(runtime: Runtime) -> Watcher:
    """The Watcher observing ``runtime``, registered on first use."""
    for observer in runtime.observers:
        if isinstance(observer, Watcher):
            return observer
    watcher = Watcher(runtime)
    runtime.observe(watcher)
    return watcher


def release_if_unused(runtime: Runtime) -> None:
    """Stop watching ``runtime`` when no consumer and no idle threshold needs it any more."""
    for observer in runtime.observers:
        if isinstance(observer, Watcher) and not observer.consumers:
            if observer.idle_threshold is None:
                observer.close()
                runtime.unobserve(observer)
