"""Entering a unit of work: deciding what it does (begin, join, savepoint or no transaction)
and giving it its transaction record."""

from __future__ import annotations

import inspect
import sys
from threading import get_ident
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from greenlet import getcurrent  # type: ignore[import-untyped]

from ._errors import (
    NoActiveUnitOfWork,
    ReadOnlyViolation,
    UnitOfWorkError,
)
from ._lifecycle import (
    KIND_JOINED,
    KIND_NONE,
    KIND_OUTERMOST,
    KIND_SAVEPOINT,
    STATE_ACTIVE,
    STATE_NEW,
)
from ._propagation import (
    PROPAGATION_MANDATORY,
    PROPAGATION_NESTED,
    PROPAGATION_NEVER,
    PROPAGATION_NOT_SUPPORTED,
    PROPAGATION_REQUIRES_NEW,
    PROPAGATION_SUPPORTS,
    Propagation,
)
from ._timeouts import Timeouts
from ._transaction import Transaction
from ._unit_ending import UnitEnding
from ._unit_messages import ASYNC_IN_SYNC, OTHER_TASK, SYNC_IN_ASYNC

if TYPE_CHECKING:
    from ._engines import EngineVariants, ReadRouting
    from ._unit import UnitOfWork


class UnitEntering(UnitEnding):
    """The entering half of ``UnitOfWork``: picks the unit's kind and makes its record."""

    __slots__ = ()

    def _enter(self, task: object | None = None) -> UnitOfWork:
        """Enter for ``task`` (an asyncio task), or for this thread when None (``with``)."""
        if self._state is not STATE_NEW:
            raise UnitOfWorkError(
                "A UnitOfWork can be entered only once; call db.unit_of_work() for a new one."
            )
        me = get_ident()
        runtime = self._runtime
        propagation = self.propagation
        stack = runtime.units.get()
        active: UnitOfWork | None = None
        if stack:
            top = stack[-1]
            record = top._tx
            if top._state is STATE_ACTIVE and record.thread == me and record.task is task:
                active = top if top._kind is not KIND_NONE else None
            else:
                active = _active_for_entry(stack, me, task, propagation)
        if (
            propagation is PROPAGATION_SUPPORTS
            or propagation is PROPAGATION_NOT_SUPPORTED
            or propagation is PROPAGATION_NEVER
        ):
            self._enter_without_unit(active, me, task)
        elif active is None or propagation is PROPAGATION_REQUIRES_NEW:
            if propagation is PROPAGATION_MANDATORY:
                raise NoActiveUnitOfWork(
                    "A unit with propagation=MANDATORY needs an active unit of work to join, and "
                    "none is active in this thread. Call it from inside 'with db.unit_of_work():' "
                    "or a @db.transactional function."
                )
            self._begin_outermost(stack, me, task)
        else:
            self._join(active, task)
        self._move_to(STATE_ACTIVE)
        scope = runtime.scope
        if scope is not None:
            self._scope = scope()
        self._token = runtime.units.set((*stack, self))  # type: ignore[arg-type]
        if runtime.observers:
            for observer in runtime.observers:
                observer.unit_entered(self)  # type: ignore[arg-type]
        return self  # type: ignore[return-value]

    def _enter_without_unit(self, active: UnitOfWork | None, me: int, task: object | None) -> None:
        propagation = self.propagation
        if active is not None and propagation is PROPAGATION_NEVER:
            raise UnitOfWorkError(
                "A unit with propagation=NEVER must run outside any unit of work, and one is "
                f"active (opened at {active.opened_at}). Call this code after that unit ends, "
                "or give it another propagation."
            )
        if active is not None and propagation is PROPAGATION_SUPPORTS:
            self._join(active, task)
            return
        self._tx = Transaction(self, me, task)  # type: ignore[arg-type]  # no session, ever
        self._kind = KIND_NONE

    def _begin_outermost(
        self, stack: tuple[UnitOfWork, ...], me: int, task: object | None
    ) -> None:
        runtime = self._runtime
        isolation = runtime.isolation
        engines: EngineVariants | None = None
        replicas: ReadRouting | None = None
        timeouts: Timeouts | None = None
        if isolation is None:
            # Resolve the engine now, so that a missing URL fails at entry, not at first query.
            if task is None:
                engines = runtime.default
                if engines is None or runtime.integration is not None:
                    engines = runtime.engines()
                # Replicas serve sync units; async units run on the primary (docs/async.md).
                replicas = engines.replicas
                if replicas is not None and not self.read_only:
                    replicas.watch_primary(engines.engine)
            else:
                engines = runtime.async_engines()
            if stack and engines.is_sqlite:
                self._refuse_sqlite_self_deadlock(stack, engines, me)
            defaults = engines.timeouts
            if defaults is None:
                defaults = runtime.default_timeouts
            extras = self._extras
            asked = extras.timeouts if extras is not None else None
            if asked is not None or defaults is not None:
                timeouts = Timeouts.resolve(asked, defaults)
        elif (task is not None) != (isolation.async_connection is not None):
            raise UnitOfWorkError(
                "flask_uow.testing.isolated() holds a sync connection and isolated_async() an "
                "async one; units of the other kind cannot run on it. Use isolated() around "
                "sync code under test and 'async with isolated_async(db)' around async code."
            )
        elif isolation.thread != me:
            raise UnitOfWorkError(
                "flask_uow.testing.isolated() holds one connection for the thread that entered "
                "it; units in other threads cannot share it. Run threaded code under test "
                "without isolated(), and clean up its data explicitly."
            )
        self._tx = Transaction(self, me, task, engines, replicas, timeouts)  # type: ignore[arg-type]
        self._kind = KIND_OUTERMOST
        next(runtime.counters.started)

    def _refuse_sqlite_self_deadlock(
        self, stack: tuple[UnitOfWork, ...], engines: EngineVariants, me: int
    ) -> None:
        # SQLite has one writer at a time. Decided from the modes of the units involved, not
        # from whether the outer unit already ran SQL: a read-write outer unit may take the
        # write lock at any time, and a new writer in the same thread would wait for it
        # forever. In rollback-journal mode a reader blocks a writer's COMMIT too. An
        # in-memory database has one connection, which cannot hold two transactions.
        wal = engines.wal
        for other in stack:
            if (
                other._state is not STATE_ACTIVE
                or other._kind is not KIND_OUTERMOST
                or other._tx.thread != me
                or other._tx.engines is not engines
            ):
                continue
            if engines.is_memory or (not self.read_only and (not other.read_only or not wal)):
                raise UnitOfWorkError(
                    "On SQLite a unit of work that writes cannot start its own transaction inside "
                    "another unit of the same thread that may hold the database lock (the one "
                    f"opened at {other.opened_at}): it would wait for its own thread. Run the "
                    "independent work after the outer unit ends (an on_commit hook is a good "
                    "place), open it with read_only=True if it only reads, or use PostgreSQL "
                    "or MariaDB."
                )

    def _join(self, active: UnitOfWork, task: object | None) -> None:
        site = active._site
        if site is not None and site[0].co_flags & _CO_ASYNC_GENERATOR and task is not None:
            _refuse_suspended_generator(active, site[0])
        owner = active._tx
        root = owner.root
        if root.read_only and not self.read_only:
            raise ReadOnlyViolation(
                "A read-write unit of work cannot join a read-only one. Give the inner call "
                "read_only=True, or open the outer unit with read_only=False."
            )
        level = self.isolation_level
        if level is not None and level != root.isolation_level:
            running = root.isolation_level or "the engine's default isolation level"
            raise UnitOfWorkError(
                f"This unit asks for isolation_level={level!r}, but it joins a transaction that "
                f"already runs at {running}, and a transaction's isolation level cannot change. "
                "Give the outermost unit that isolation level, or run this one in its own "
                "transaction with propagation=Propagation.REQUIRES_NEW."
            )
        if self.propagation is PROPAGATION_NESTED:
            session = owner.session
            if session is None:  # only the outermost record opens it; a savepoint's has it
                session = owner.open_session(self._runtime)
            # A record nested in the owner's: the same session, thread, task and engines.
            self._tx = Transaction(
                root,
                owner.thread,
                owner.task,
                owner.engines,
                owner.replicas,
                owner.timeouts,
                session,
                owner.async_session,
                owner,
                session.begin_nested(),
            )
            self._kind = KIND_SAVEPOINT
        else:
            self._tx = owner
            self._kind = KIND_JOINED


_WITHOUT_UNIT = frozenset({PROPAGATION_SUPPORTS, PROPAGATION_NOT_SUPPORTED, PROPAGATION_NEVER})
_NEVER_JOIN_FOREIGN = frozenset({PROPAGATION_REQUIRES_NEW, *_WITHOUT_UNIT})


def _active_for_entry(
    stack: tuple[UnitOfWork, ...], me: int, task: object | None, propagation: Propagation
) -> UnitOfWork | None:
    """The unit a new unit of this thread (and task) would join, skipping ended ones."""
    unit = innermost_live(stack)
    if unit is None:
        return None
    record = unit._tx
    if record.thread == me and record.task is not task:
        if task is None:
            raise UnitOfWorkError(SYNC_IN_ASYNC)
        if propagation in _NEVER_JOIN_FOREIGN:
            return None
        if record.task is None:
            raise UnitOfWorkError(ASYNC_IN_SYNC)
        raise UnitOfWorkError(OTHER_TASK)
    if record.thread != me:
        if propagation is PROPAGATION_REQUIRES_NEW or propagation in _WITHOUT_UNIT:
            return None
        raise UnitOfWorkError(
            "The active unit of work was opened in another thread (this thread's context "
            "was copied from it), and a Session must not be shared between threads. Open a "
            "new unit here with propagation=Propagation.REQUIRES_NEW, or start the thread "
            "without copying the context."
        )
    return unit if unit._kind is not KIND_NONE else None


def innermost_live(stack: tuple[UnitOfWork, ...]) -> UnitOfWork | None:
    """The innermost unit of ``stack`` that is still active, of any thread."""
    for unit in reversed(stack):
        if unit._state is STATE_ACTIVE:
            return unit
    return None


_CO_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR


def _refuse_suspended_generator(active: UnitOfWork, generator: CodeType) -> None:
    """Refuse to join ``active``, opened in an async generator, unless that generator runs."""
    frame: FrameType | None = sys._getframe(2)
    runner = getcurrent()  # a NESTED unit enters in a greenlet: look in its parents too
    while runner is not None:
        while frame is not None:
            if frame.f_code is generator:
                return
            frame = frame.f_back
        runner = runner.parent
        frame = runner.gr_frame if runner is not None else None
    raise UnitOfWorkError(
        f"The active unit of work was opened in the async generator {generator.co_qualname} "
        f"(at {active.opened_at}), which is suspended at a 'yield' or was left by 'break': "
        "a unit opened here would join its transaction, which ends only when the generator "
        "is closed. Close the generator first ('await gen.aclose()', or iterate it inside "
        "'async with contextlib.aclosing(gen)'), end its unit before yielding, or open this "
        "unit with propagation=Propagation.REQUIRES_NEW."
    )
