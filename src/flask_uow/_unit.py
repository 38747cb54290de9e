"""The unit of work: one transaction boundary, entered and ended as a context manager."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import Token
from threading import get_ident
from types import CodeType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.orm import SessionTransaction

from ._engines import normalize_isolation_level
from ._errors import (
    CommitOutcomeUnknown,
    NoActiveUnitOfWork,
    ReadOnlyViolation,
    UnexpectedRollback,
    UnitOfWorkError,
)
from ._hooks import Hook, check_hook, logger, run_hooks
from ._lifecycle import (
    KIND_JOINED,
    KIND_NONE,
    KIND_OUTERMOST,
    KIND_SAVEPOINT,
    OUTCOME_COMMITTED,
    OUTCOME_DOOMED,
    OUTCOME_JOINED,
    OUTCOME_NO_TRANSACTION,
    OUTCOME_READ_ONLY,
    OUTCOME_RELEASED,
    OUTCOME_ROLLED_BACK,
    OUTCOME_UNKNOWN,
    STATE_ACTIVE,
    STATE_ENDED,
    STATE_INVALIDATED,
    STATE_NEW,
    TRANSITIONS,
    Outcome,
    UnitKind,
    UnitState,
)
from ._propagation import (
    PROPAGATION_MANDATORY,
    PROPAGATION_NESTED,
    PROPAGATION_NEVER,
    PROPAGATION_NOT_SUPPORTED,
    PROPAGATION_REQUIRED,
    PROPAGATION_REQUIRES_NEW,
    PROPAGATION_SUPPORTS,
    Propagation,
)
from ._retry import is_transient
from ._session import (
    UnitSession,
    end_close,
    end_commit,
    end_rollback,
    failed_in_commit,
    rollback_savepoint,
    transaction_aborted,
)
from ._timeouts import Seconds, Timeouts, engine_with

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ._aio import AsyncUnitSession
    from ._engines import EngineVariants
    from ._replicas import Replicas
    from ._runtime import Runtime

Origin = tuple[CodeType, int] | str | None
"""Where a unit was opened: a code object and line, a description, or unknown."""


CallSite = tuple[CodeType, int]
"""A code object and the offset of an instruction in it (a frame's ``f_lasti``)."""


@functools.lru_cache(maxsize=1024)
def line_of(code: CodeType, offset: int) -> int:
    """The source line of the instruction at ``offset`` in ``code``.

    Units note the instruction offset of the ``db.unit_of_work()`` call, which costs nothing;
    a frame's ``f_lineno`` would decode the code's line table on every unit.
    """
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


_WITHOUT_UNIT = frozenset({PROPAGATION_SUPPORTS, PROPAGATION_NOT_SUPPORTED, PROPAGATION_NEVER})
_NEVER_JOIN_FOREIGN = frozenset({PROPAGATION_REQUIRES_NEW, *_WITHOUT_UNIT})


class UnitOfWork:
    """One transaction boundary. Create it with ``db.unit_of_work()`` and use it in ``with``.

    Entering decides, from its propagation and the unit already active in this thread,
    whether it starts a transaction (outermost), opens a SAVEPOINT, joins, or runs with no
    transaction. Ending it:

    - an outermost unit leaving normally COMMITs, then closes its session and runs its
      ``on_commit`` hooks; leaving with any exception, or after ``set_rollback()``, it
      ROLLs BACK, closes and runs its ``on_rollback`` hooks. The exception is re-raised
      unchanged. If its transaction can no longer commit (a joined unit failed, a flush or
      a PostgreSQL statement failed and was caught), it rolls back and raises
      ``UnexpectedRollback``; if the connection is lost during COMMIT it raises
      ``CommitOutcomeUnknown``.
    - a savepoint unit leaving normally releases the SAVEPOINT and hands its hooks to the
      enclosing unit; otherwise it rolls back to the SAVEPOINT, releases it and discards
      its hooks.
    - a joined unit leaving with an exception, or after ``set_rollback()``, dooms the
      transaction it joined, which then rolls back and raises ``UnexpectedRollback`` if it
      was leaving normally. Nothing is rolled back silently.

    Units end in the reverse order of entering them. A unit ended while units entered after
    it are still active invalidates them (they raise when used or ended), rolls back and
    raises ``UnitOfWorkError``. A unit is used once and only in the thread that entered it.
    """

    __slots__ = (
        "propagation",
        "read_only",
        "isolation_level",
        "attempt",
        "_runtime",
        "_state",
        "_kind",
        "_outcome",
        "_thread",
        "_root",
        "_owner",
        "_enclosing",
        "_session",
        "_savepoint",
        "_commit_hooks",
        "_rollback_hooks",
        "_unknown_hooks",
        "_rollback_hooks_held",
        "_rollback_requested",
        "_doomed_by",
        "_failed_during_commit",
        "_origin",
        "_site",
        "_scope",
        "_engines",
        "_retries_left",
        "_token",
        "_depth",
        "_invalidated_by",
        "_replicas",
        "after",
        "_asked",
        "_timeouts",
        "_task",
        "_async_session",
    )

    def __init__(
        self,
        runtime: Runtime,
        *,
        propagation: Propagation = PROPAGATION_REQUIRED,
        read_only: bool = False,
        isolation_level: str | None = None,
        origin: Origin = None,
        site: CallSite | None = None,
        retries_left: int = 0,
        statement_timeout: Seconds | None = None,
        lock_timeout: Seconds | None = None,
        retry_lock_timeouts: bool = False,
        attempt: int = 1,
    ) -> None:
        if not isinstance(propagation, Propagation):
            raise TypeError(
                f"propagation must be a flask_uow.Propagation member, got {propagation!r}"
            )
        if isolation_level is not None:
            isolation_level = normalize_isolation_level(isolation_level)
        self.propagation = propagation
        """How this unit relates to a unit already active when it is entered."""
        self.read_only = read_only
        """Whether this unit refuses writes and never commits."""
        self.isolation_level = isolation_level
        """The transaction isolation level asked for, or None for the engine's default."""
        self.attempt = attempt
        """1 for a first run; 2 and more for the retries of ``@db.transactional(retries=)``."""
        self._asked = (
            None
            if statement_timeout is None and lock_timeout is None and not retry_lock_timeouts
            else Timeouts.from_options(statement_timeout, lock_timeout, retry_lock_timeouts)
        )
        self._timeouts: Timeouts | None = None
        self._runtime = runtime
        self._state = STATE_NEW
        self._kind: UnitKind | None = None
        self._outcome: Outcome | None = None
        self._thread = 0
        self._root: UnitOfWork = self  # the outermost unit whose session this unit uses
        self._owner: UnitOfWork = self  # the unit whose hooks and doom this unit shares
        self._enclosing: UnitOfWork | None = None  # a savepoint's enclosing owner
        self._session: UnitSession | None = None
        self._savepoint: SessionTransaction | None = None
        # Tuples, replaced on registration: most units register no hook, and build nothing.
        self._commit_hooks: tuple[Hook, ...] = ()
        self._rollback_hooks: tuple[Hook, ...] = ()
        self._unknown_hooks: tuple[Hook, ...] = ()
        self._rollback_hooks_held = False  # for a retry (see call_off_retry)
        self._rollback_requested = False
        self._doomed_by: BaseException | str | None = None
        self._failed_during_commit = False
        self._origin = origin
        self._site = site  # where db.unit_of_work() was called; origin is worked out on demand
        self._scope: object | None = None
        self._engines: EngineVariants | None = None
        self._retries_left = retries_left
        self._token: Token[tuple[UnitOfWork, ...]] | None = None
        self._depth = 0
        self._invalidated_by: UnitOfWork | None = None
        self._replicas: Replicas | None = None
        self.after: int | None = None
        """The causal position a read-only outermost unit must see (``after=token``)."""
        self._task: object | None = None  # the asyncio task owning an async unit
        self._async_session: AsyncUnitSession | None = None

    def __repr__(self) -> str:
        kind = self._kind.value if self._kind else "not entered"
        return f"<UnitOfWork {kind} {self._state.value} propagation={self.propagation.name}>"

    # -- public API ------------------------------------------------------------------------

    @property
    def session(self) -> UnitSession:
        """The Session of this unit's transaction, created on first use.

        The first SQL it runs checks a connection out of the pool; a unit that runs none
        never touches the database.
        """
        if self._state is not STATE_ACTIVE:
            raise UnitOfWorkError(self._not_active("its session exists only inside it"))
        root = self._root
        if root._thread != get_ident():
            raise UnitOfWorkError(
                "This unit of work belongs to another thread, and a Session must not be shared "
                "between threads. Open a unit in this thread instead (db.unit_of_work() or "
                "@db.transactional); pass ids, not ORM objects or sessions, to other threads."
            )
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(self._no_transaction_message())
        if root._task is not None:
            return cast(UnitSession, self.async_session)
        session = root._session
        if session is None:
            session = root._session = root._open_session()
        return session

    @property
    def async_session(self) -> AsyncUnitSession:
        """The ``AsyncSession`` of an async unit: what ``session`` is there, typed as such.

        Only the task that entered the unit may use it: a task created inside the unit
        (``create_task``, ``gather``, ``TaskGroup``) opens its own unit instead.
        """
        if self._state is not STATE_ACTIVE:
            raise UnitOfWorkError(self._not_active("its session exists only inside it"))
        root = self._root
        if root._task is None:
            raise UnitOfWorkError(
                "This unit of work was entered with 'with', so it has a synchronous Session: "
                "use uow.session. Enter it with 'async with' for an AsyncSession."
            )
        if root._thread != get_ident() or root._task is not _running_task():
            raise UnitOfWorkError(_OTHER_TASK)
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(self._no_transaction_message())
        if root._session is None:
            root._open_session()
        session = root._async_session
        assert session is not None
        return session

    @property
    def is_async(self) -> bool:
        """True when this unit was entered with ``async with`` (its session is an AsyncSession)."""
        return self._task is not None

    @property
    def state(self) -> UnitState:
        """Where this unit is in its life."""
        return self._state

    @property
    def kind(self) -> UnitKind | None:
        """What entering this unit did, or None before it is entered."""
        return self._kind

    @property
    def outcome(self) -> Outcome | None:
        """How this unit ended, or None while it has not ended."""
        return self._outcome

    @property
    def is_outermost(self) -> bool:
        """True when this unit owns its transaction (it will COMMIT or ROLLBACK)."""
        return self._kind is KIND_OUTERMOST

    @property
    def will_roll_back(self) -> bool:
        """True when this unit's transaction can no longer commit: it will end with ROLLBACK."""
        owner = self._owner
        return (
            self._rollback_requested
            or owner._rollback_requested
            or owner._doomed_by is not None
            or self._root._rollback_requested
            or self._root._doomed_by is not None
        )

    @property
    def timeouts(self) -> Timeouts | None:
        """The statement and lock timeouts of the transaction this outermost unit began."""
        return self._timeouts

    @property
    def root(self) -> UnitOfWork:
        """The outermost unit whose transaction this unit runs in (itself when outermost)."""
        return self._root

    @property
    def origin(self) -> Origin:
        """Where this unit was opened, as given: a code object and line, a text, or None."""
        origin = self._origin
        site = self._site
        if origin is None and site is not None:
            origin = self._origin = (site[0], line_of(*site))
        return origin

    @property
    def engine(self) -> sa.Engine | None:
        """The engine this outermost unit's transaction runs on, once entered."""
        engines = self._engines
        if engines is not None:
            return engines.engine
        isolation = self._runtime.isolation
        if isolation is not None and self._kind is KIND_OUTERMOST:
            return isolation.connection.engine
        return None

    @property
    def retries_left(self) -> int:
        """How many more times ``@db.transactional(retries=...)`` may run this unit again."""
        return self._retries_left

    @property
    def scope(self) -> object | None:
        """What the framework integration said this unit was opened in (a Flask app context)."""
        return self._scope

    def on_commit(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction COMMITs and its session is closed.

        Registered in a joined unit or a savepoint, it belongs to the transaction that
        finally commits; it never runs if that transaction rolls back.
        """
        owner = self._owner_for_hooks("on_commit", callback)
        owner._commit_hooks = (*owner._commit_hooks, callback)

    def on_rollback(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction ROLLs BACK and its session is closed."""
        owner = self._owner_for_hooks("on_rollback", callback)
        owner._rollback_hooks = (*owner._rollback_hooks, callback)

    def on_outcome_unknown(self, callback: Hook) -> None:
        """Call ``callback()`` once if the connection is lost while COMMIT is on its way.

        Then nobody knows whether the server committed; neither ``on_commit`` nor
        ``on_rollback`` hooks run, and ``CommitOutcomeUnknown`` is raised.
        """
        owner = self._owner_for_hooks("on_outcome_unknown", callback)
        owner._unknown_hooks = (*owner._unknown_hooks, callback)

    def set_rollback(self) -> None:
        """End this unit with ROLLBACK instead of COMMIT, without raising an exception.

        On an outermost unit or a savepoint this quietly rolls back its own work. On a
        joined unit it dooms the transaction it joined (see ``UnexpectedRollback``).
        """
        self._require_transaction("set_rollback")
        self._rollback_requested = True

    @property
    def opened_at(self) -> str | None:
        """Where this unit was opened: ``file:line in function``, or a description."""
        origin = self.origin
        if origin is None or isinstance(origin, str):
            return origin
        code, line = origin
        return f"{code.co_filename}:{line} in {code.co_name}"

    def will_retry(self, error: BaseException) -> bool:
        """True when ``@db.transactional(retries=...)`` will run this unit again after ``error``.

        An attempt that will be retried is invisible: none of its hooks run.
        """
        if self._retries_left <= 0 or self._kind is not KIND_OUTERMOST:
            return False
        timeouts = self._timeouts
        if timeouts is not None:
            retryable = timeouts.retryable(error)
            if retryable is not None:
                return retryable
        return is_transient(error, during_commit=self._failed_during_commit)

    @property
    def holds_rollback_hooks(self) -> bool:
        """True when this unit ran no ``on_rollback`` hooks because a retry was to follow."""
        return self._rollback_hooks_held

    def call_off_retry(self) -> None:
        """Run the ``on_rollback`` hooks this unit held back for a retry that will not come.

        An attempt that ``@db.transactional(retries=...)`` runs again is invisible: none of
        its hooks run. When the retry is called off instead (the task is cancelled while the
        attempt ends or while it waits to retry), that attempt was the last one, and its
        ``on_rollback`` hooks run, as a last attempt's do. Its transaction has already
        rolled back; a unit that holds no hooks is left alone.
        """
        if self._rollback_hooks_held:
            self._rollback_hooks_held = False
            run_hooks(self._rollback_hooks, "on_rollback")

    @property
    def failed_during_commit(self) -> bool:
        """True when the COMMIT statement itself failed (not a flush or a statement before it)."""
        return self._failed_during_commit

    def abandon(self) -> None:
        """End this unit from outside its ``with`` block: roll back what it touched.

        For safety nets (a Flask app context ending, ``flask_uow.testing.isolated()``):
        an outermost unit rolls back, closes and runs its ``on_rollback`` hooks; a savepoint
        rolls back to its SAVEPOINT; a joined unit dooms the transaction it joined. Units
        entered after it that are still active are abandoned first.
        """
        if self._state is STATE_INVALIDATED:
            self._move(STATE_ENDED)
            return
        if self._state is not STATE_ACTIVE:
            return
        for above in reversed(self._units_above()):
            above.abandon()
        reason = UnitOfWorkError(f"the unit of work opened at {self.opened_at} was never ended")
        self._end_by_kind(reason)

    # -- entering ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncUnit:
        """Enter as an async unit, owned by the running task; its session is an AsyncSession.

        Deciding what the unit does is the same as for ``with``; only a SAVEPOINT is sent
        at entry, through the async driver.
        """
        from ._aio import run_in_greenlet, running_task

        task = running_task()
        if task is None:
            raise UnitOfWorkError(
                "'async with db.unit_of_work()' needs a running asyncio task; in sync code "
                "use 'with db.unit_of_work()'."
            )
        if self.propagation is PROPAGATION_NESTED:
            await run_in_greenlet(self._enter, task)
        else:
            self._enter(task)
        return cast(AsyncUnit, self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """End as ``__exit__`` does, sending ROLLBACK or COMMIT through the async driver.

        A cancellation arriving while the unit ends (``CancelledError``, ``asyncio.timeout``)
        does not interrupt its end: the ROLLBACK or COMMIT finishes, the connection goes
        back to the pool and the hooks run, then the cancellation is re-raised.
        """
        kind = self._kind
        if (kind is KIND_JOINED or kind is KIND_NONE) and not self._units_above():
            self.__exit__(exc_type, exc, traceback)  # sends nothing, runs no hooks
            return
        from ._aio import run_to_completion

        await run_to_completion(self.__exit__, exc_type, exc, traceback)

    async def abandon_async(self) -> None:
        """``abandon()`` for an async unit: its ROLLBACK goes through the async driver."""
        from ._aio import run_to_completion

        await run_to_completion(self.abandon)

    def _enter(self, task: object | None = None) -> UnitOfWork:
        """Enter for ``task`` (an asyncio task), or for this thread when None (``with``)."""
        if self._state is not STATE_NEW:
            raise UnitOfWorkError(
                "A UnitOfWork can be entered only once; call db.unit_of_work() for a new one."
            )
        self._thread = me = get_ident()
        self._task = task
        runtime = self._runtime
        propagation = self.propagation
        stack = runtime.units.get()
        active: UnitOfWork | None = None
        if stack:
            top = stack[-1]
            if top._state is STATE_ACTIVE and top._thread == me and top._task is task:
                active = top if top._kind is not KIND_NONE else None
            else:
                active = _active_for_entry(stack, me, task, propagation)
        if (
            propagation is PROPAGATION_SUPPORTS
            or propagation is PROPAGATION_NOT_SUPPORTED
            or propagation is PROPAGATION_NEVER
        ):
            self._enter_without_unit(active)
        elif active is None or propagation is PROPAGATION_REQUIRES_NEW:
            if propagation is PROPAGATION_MANDATORY:
                raise NoActiveUnitOfWork(
                    "A unit with propagation=MANDATORY needs an active unit of work to join, and "
                    "none is active in this thread. Call it from inside 'with db.unit_of_work():' "
                    "or a @db.transactional function."
                )
            self._begin_outermost(stack)
        else:
            self._join(active)
        self._state = STATE_ACTIVE  # from NEW, checked above
        scope = runtime.scope
        if scope is not None:
            self._scope = scope()
        self._depth = len(stack)
        self._token = runtime.units.set((*stack, self))
        if runtime.observers:
            for observer in runtime.observers:
                observer.unit_entered(self)
        return self

    __enter__ = _enter  # ``with``: no extra call on the sync hot path

    def _enter_without_unit(self, active: UnitOfWork | None) -> None:
        propagation = self.propagation
        if active is not None and propagation is PROPAGATION_NEVER:
            raise UnitOfWorkError(
                "A unit with propagation=NEVER must run outside any unit of work, and one is "
                f"active (opened at {active.opened_at}). Call this code after that unit ends, "
                "or give it another propagation."
            )
        if active is not None and propagation is PROPAGATION_SUPPORTS:
            self._join(active)
            return
        self._kind = KIND_NONE

    def _begin_outermost(self, stack: tuple[UnitOfWork, ...]) -> None:
        runtime = self._runtime
        isolation = runtime.isolation
        if isolation is None:
            # Resolve the engine now, so that a missing URL fails at entry, not at first query.
            if self._task is None:
                engines = runtime.default
                if engines is None or runtime.integration is not None:
                    engines = runtime.engines()
            else:
                engines = runtime.async_engines()
            self._engines = engines
            # Replicas serve sync units; async units run on the primary (docs/async.md).
            replicas = self._replicas = engines.replicas if self._task is None else None
            if replicas is not None and not self.read_only:
                replicas.watch_primary(engines.engine)
            if stack and engines.is_sqlite:
                self._refuse_sqlite_self_deadlock(stack, engines)
            defaults = engines.timeouts
            if defaults is None:
                defaults = runtime.default_timeouts
            if self._asked is not None or defaults is not None:
                self._timeouts = Timeouts.resolve(self._asked, defaults)
        elif (self._task is not None) != (isolation.async_connection is not None):
            raise UnitOfWorkError(
                "flask_uow.testing.isolated() holds a sync connection and isolated_async() an "
                "async one; units of the other kind cannot run on it. Use isolated() around "
                "sync code under test and 'async with isolated_async(db)' around async code."
            )
        elif isolation.thread != get_ident():
            raise UnitOfWorkError(
                "flask_uow.testing.isolated() holds one connection for the thread that entered "
                "it; units in other threads cannot share it. Run threaded code under test "
                "without isolated(), and clean up its data explicitly."
            )
        self._kind = KIND_OUTERMOST
        runtime.counters.count_start()

    def _refuse_sqlite_self_deadlock(
        self, stack: tuple[UnitOfWork, ...], engines: EngineVariants
    ) -> None:
        # SQLite has one writer at a time. Decided from the modes of the units involved, not
        # from whether the outer unit already ran SQL: a read-write outer unit may take the
        # write lock at any time, and a new writer in the same thread would wait for it
        # forever. In rollback-journal mode a reader blocks a writer's COMMIT too. An
        # in-memory database has one connection, which cannot hold two transactions.
        me = self._thread
        wal = engines.wal
        for other in stack:
            if (
                other._state is not STATE_ACTIVE
                or other._thread != me
                or other._kind is not KIND_OUTERMOST
                or other._engines is not engines
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

    def _join(self, active: UnitOfWork) -> None:
        root = active._root
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
        self._root = root
        if self.propagation is PROPAGATION_NESTED:
            session = root._session
            if session is None:
                session = root._open_session()
            self._savepoint = session.begin_nested()
            self._enclosing = active._owner
            self._kind = KIND_SAVEPOINT
        else:
            self._owner = active._owner
            self._kind = KIND_JOINED

    def _open_session(self) -> UnitSession:
        runtime = self._runtime
        isolation = runtime.isolation
        if isolation is not None and isolation.async_connection is not None:
            wrapper = self._async_session = runtime.async_session_class()(
                bind=isolation.async_connection,
                join_transaction_mode="create_savepoint",
                **runtime.session_options,
            )
            session = cast(UnitSession, wrapper.sync_session)
        elif isolation is not None:
            session = runtime.session_class(
                bind=isolation.connection,
                join_transaction_mode="create_savepoint",
                **runtime.session_options,
            )
        elif self._task is None:
            engines = self._engines
            assert engines is not None
            bind: sa.Engine | None = None
            replicas = self._replicas
            if self.read_only and replicas is not None:
                bind = replicas.engine_for_read(
                    self.after, isolation_level=self.isolation_level
                ).engine
            if bind is None:
                bind = engines.for_unit(
                    read_only=self.read_only, isolation_level=self.isolation_level
                )
            if self._timeouts is not None:
                bind = engine_with(bind, self._timeouts)
            session = runtime.session_class(bind=bind, **runtime.session_options)
        else:
            from ._aio import open_async_session

            engines = self._engines
            assert engines is not None
            wrapper = self._async_session = open_async_session(
                runtime.async_session_class(),
                engines,
                runtime.session_options,
                read_only=self.read_only,
                isolation_level=self.isolation_level,
                timeouts=self._timeouts,
            )
            session = cast(UnitSession, wrapper.sync_session)
        self._session = session
        session.flask_uow_unit = self
        session.flask_uow_read_only = self.read_only
        return session

    # -- ending ------------------------------------------------------------------------------

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        state = self._state
        if state is not STATE_ACTIVE:
            if state is STATE_INVALIDATED:
                error = UnitOfWorkError(self._not_active("it cannot commit anything"))
                self._move(STATE_ENDED)
                raise error
            raise UnitOfWorkError(f"This unit of work is {state.value}; it cannot end again.")
        stack = self._runtime.units.get()
        depth = self._depth
        if len(stack) > depth + 1 and stack[depth] is self:
            above = self._units_above()
            if above:
                self._end_out_of_order(exc, above)
        timeouts = self._timeouts
        if timeouts is None:
            if self._kind is KIND_OUTERMOST:
                self._end_outermost(exc)
            else:
                self._end_by_kind(exc)
            return
        try:
            self._end_by_kind(exc)
        except Exception as error:
            timeout = timeouts.error_for(error, self.opened_at)
            if timeout is None:
                raise
            raise timeout from error
        if exc is not None:
            timeout = timeouts.error_for(exc, self.opened_at)
            if timeout is not None:
                raise timeout from exc

    def _end_by_kind(self, exc: BaseException | None) -> None:
        kind = self._kind
        if kind is KIND_OUTERMOST:
            self._end_outermost(exc)
        elif kind is KIND_SAVEPOINT:
            self._end_savepoint(exc)
        elif kind is KIND_JOINED:
            self._end_joined(exc)
        else:
            self._finish(OUTCOME_NO_TRANSACTION)

    def _end_out_of_order(self, exc: BaseException | None, above: list[UnitOfWork]) -> None:
        for unit in reversed(above):
            unit._invalidate(self)
        opened = "; ".join(str(unit.opened_at) for unit in above)
        error = UnitOfWorkError(
            f"The unit of work opened at {self.opened_at} ended while units of work entered "
            f"after it were still active (opened at {opened}). Those were invalidated and this "
            "unit's work was rolled back. End units in the reverse order of entering them: a "
            "unit held open across a 'yield' must end before the code around the generator "
            "ends its own unit (exhaust or close the generator first)."
        )
        self._end_by_kind(error)
        raise error from exc

    def _invalidate(self, ended_first: UnitOfWork) -> None:
        self._invalidated_by = ended_first
        self._move(STATE_INVALIDATED)
        self._outcome = OUTCOME_ROLLED_BACK
        runtime = self._runtime
        if self._kind is KIND_OUTERMOST:
            self._discard(self._session)
            runtime.counters.count_rolled_back()
        for observer in runtime.observers:
            observer.unit_ended(self)
        if self._kind is KIND_OUTERMOST:
            run_hooks(self._rollback_hooks, "on_rollback")

    def _end_joined(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._owner._doomed_by = exc
        elif self._rollback_requested:
            self._owner._doomed_by = "set_rollback() was called in a joined unit"
        self._finish(OUTCOME_JOINED if self._owner._doomed_by is None else OUTCOME_ROLLED_BACK)

    def _end_outermost(self, exc: BaseException | None) -> None:
        session = self._session
        if exc is None and self._doomed_by is None and not self._rollback_requested:
            if session is None:
                self._finish(OUTCOME_READ_ONLY if self.read_only else OUTCOME_COMMITTED)
                if self._commit_hooks:
                    run_hooks(self._commit_hooks, "on_commit")
            elif self.read_only:
                self._end_read_only(session)
            else:
                self._commit(session)
            return
        self._discard(session)
        if exc is None and not self._rollback_requested:
            unexpected = self._unexpected_rollback()
            self._finish(OUTCOME_DOOMED)
            run_hooks(self._rollback_hooks, "on_rollback")
            raise unexpected
        self._finish(OUTCOME_ROLLED_BACK)
        if exc is None or not self.will_retry(exc):
            run_hooks(self._rollback_hooks, "on_rollback")
        else:
            self._rollback_hooks_held = True

    def _end_read_only(self, session: UnitSession) -> None:
        try:
            # Pending changes fail here with ReadOnlyViolation rather than being dropped.
            session.flush()
        except BaseException:
            self._discard(session)
            self._finish(OUTCOME_ROLLED_BACK)
            run_hooks(self._rollback_hooks, "on_rollback")
            raise
        self._close_quietly(session)
        self._finish(OUTCOME_READ_ONLY)
        if self._commit_hooks:
            run_hooks(self._commit_hooks, "on_commit")

    def _commit(self, session: UnitSession) -> None:
        engines = self._engines
        if transaction_aborted(session, server_check=engines is None or engines.aborts_on_error):
            self._discard(session)
            self._finish(OUTCOME_DOOMED)
            run_hooks(self._rollback_hooks, "on_rollback")
            raise self._aborted()
        try:
            end_commit(session)
        except BaseException as error:
            during_commit = self._failed_during_commit = failed_in_commit(session, error)
            self._discard(session)
            if during_commit and getattr(error, "connection_invalidated", False):
                self._finish(OUTCOME_UNKNOWN)
                run_hooks(self._unknown_hooks, "on_outcome_unknown")
                raise CommitOutcomeUnknown(
                    "The connection to the database was lost while COMMIT was on its way, so "
                    "nobody knows whether the transaction committed. It is not retried. Check "
                    "whether the work is there before doing it again, or make it idempotent "
                    "(an idempotency key); on_outcome_unknown hooks ran, and neither on_commit "
                    "nor on_rollback hooks did."
                ) from error
            self._finish(OUTCOME_ROLLED_BACK)
            if not self.will_retry(error):
                run_hooks(self._rollback_hooks, "on_rollback")
            else:
                self._rollback_hooks_held = True
            raise
        self._close_quietly(session)
        self._finish(OUTCOME_COMMITTED)
        replicas = self._replicas
        if replicas is not None and self._engines is not None:
            replicas.note_commit(self._engines.engine)  # the causal position, if it wrote
        if self._commit_hooks:
            run_hooks(self._commit_hooks, "on_commit")

    def _end_savepoint(self, exc: BaseException | None) -> None:
        savepoint = self._savepoint
        session = self._root._session
        assert savepoint is not None and session is not None
        if exc is None and self._doomed_by is None and not self._rollback_requested:
            if not savepoint.is_active or transaction_aborted(session, server_check=True):
                self._rollback_savepoint(session, savepoint)
                self._finish(OUTCOME_DOOMED)
                raise self._aborted()
            try:
                savepoint.commit()
            except BaseException:
                self._rollback_savepoint(session, savepoint)
                self._finish(OUTCOME_ROLLED_BACK)
                raise
            self._finish(OUTCOME_RELEASED)
            enclosing = self._enclosing
            assert enclosing is not None
            enclosing._commit_hooks += self._commit_hooks
            enclosing._rollback_hooks += self._rollback_hooks
            enclosing._unknown_hooks += self._unknown_hooks
            return
        self._rollback_savepoint(session, savepoint)
        if exc is None and not self._rollback_requested:
            unexpected = self._unexpected_rollback()
            self._finish(OUTCOME_DOOMED)
            raise unexpected
        self._finish(OUTCOME_ROLLED_BACK)

    def _rollback_savepoint(self, session: UnitSession, savepoint: SessionTransaction) -> None:
        try:
            rollback_savepoint(session, savepoint)
        except Exception as error:
            # The savepoint's work may still be in the transaction: it must not commit.
            enclosing = self._enclosing
            assert enclosing is not None
            enclosing._doomed_by = error
            logger.warning(
                "flask-uow: rolling back to a savepoint failed; the enclosing transaction "
                "will roll back too",
                exc_info=True,
            )

    def _discard(self, session: UnitSession | None) -> None:
        """Roll back and close, never raising: the caller's exception matters more."""
        if session is None:
            return
        try:
            end_rollback(session)
        except Exception:
            logger.warning(
                "flask-uow: ROLLBACK failed (the connection is probably gone); closing the "
                "session invalidates it",
                exc_info=True,
            )
        self._close_quietly(session)

    @staticmethod
    def _close_quietly(session: UnitSession) -> None:
        # After COMMIT (or for a read-only unit, instead of it) a failure to close cannot
        # change the outcome any more; report it and carry on.
        try:
            end_close(session)
        except Exception:
            logger.warning("flask-uow: closing the session failed", exc_info=True)

    def _finish(self, outcome: Outcome) -> None:
        """Settle the outcome, leave the ambient stack and count: once, in one place."""
        self._outcome = outcome
        doomed_by = self._doomed_by
        if doomed_by is not None and not isinstance(doomed_by, str):
            # Keep that it was doomed, not the error: its traceback holds the frames of the
            # failure and what they held, as long as this ended unit lives (a driver's
            # cursor, say: SQLite keeps a closed connection's locks while its statement does).
            self._doomed_by = f"{type(doomed_by).__name__} was raised"
        if self._state is STATE_ACTIVE:
            self._state = STATE_ENDED
        else:
            self._move(STATE_ENDED)
        runtime = self._runtime
        # Leave the ambient stack: restore what this unit's entry replaced.
        units = runtime.units
        stack = units.get()
        depth = self._depth
        token = self._token
        if len(stack) > depth and stack[depth] is self and token is not None:
            try:
                units.reset(token)
            except (ValueError, RuntimeError):
                # Entered in another context (a copy): this one only forgets it.
                units.set(stack[:depth])
        # Elsewhere (a context copied while it was active) it stays listed, ended: ignored.
        if self._kind is KIND_OUTERMOST:
            runtime.counters.count_end(outcome)
        if runtime.observers:
            for observer in runtime.observers:
                observer.unit_ended(self)

    def _move(self, state: UnitState) -> None:
        if state not in TRANSITIONS[self._state]:
            raise UnitOfWorkError(
                f"A unit of work cannot go from {self._state.value} to {state.value}."
            )
        self._state = state

    # -- the ambient stack -------------------------------------------------------------------

    def _units_above(self) -> list[UnitOfWork]:
        """Units entered after this one in this context that are still active."""
        stack = self._runtime.units.get()
        depth = self._depth
        if len(stack) <= depth + 1 or stack[depth] is not self:
            return []
        return [unit for unit in stack[depth + 1 :] if unit._state is STATE_ACTIVE]

    # -- messages ----------------------------------------------------------------------------

    def _owner_for_hooks(self, what: str, callback: object) -> UnitOfWork:
        check_hook(callback, what, allow_async=self._task is not None)
        self._require_transaction(what)
        return self._owner

    def _require_transaction(self, what: str) -> None:
        if self._state is not STATE_ACTIVE:
            raise UnitOfWorkError(
                self._not_active(f"{what}() needs an active unit of work")
            )
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(
                f"{what}() needs a transaction, and this unit runs with none "
                f"(propagation={self.propagation.name}). {self._no_transaction_message()}"
            )

    def _not_active(self, consequence: str) -> str:
        if self._state is STATE_INVALIDATED:
            ended_first = self._invalidated_by
            where = ended_first.opened_at if ended_first is not None else None
            return (
                f"This unit of work was invalidated, and {consequence}: the unit opened at "
                f"{where}, entered before it, ended first and rolled back. End units in the "
                "reverse order of entering them."
            )
        return (
            f"This unit of work is {self._state.value}, and {consequence}: use it inside its "
            "'with' block or decorated function, or open a new unit to run more queries."
        )

    def _no_transaction_message(self) -> str:
        return (
            f"Code running under propagation={self.propagation.name} has no unit of work, so "
            "there is no session to use. Open one for the work that needs the database "
            "(db.unit_of_work() or @db.transactional), or use another propagation."
        )

    def _unexpected_rollback(self) -> UnexpectedRollback:
        cause = self._doomed_by
        where = "the savepoint" if self._kind is KIND_SAVEPOINT else "the transaction"
        reason = cause if isinstance(cause, str) else f"a joined unit of work raised {cause!r}"
        error = UnexpectedRollback(
            f"{where.capitalize()} was rolled back because {reason}, although this unit was "
            "leaving normally. A failure inside a joined unit dooms the whole transaction, even "
            "when the caller catches it. Let the error propagate, or run the inner call with "
            "propagation=Propagation.NESTED so that its failure undoes only its own savepoint."
        )
        if isinstance(cause, BaseException):
            error.__cause__ = cause
        return error

    def _aborted(self) -> UnexpectedRollback:
        where = "savepoint" if self._kind is KIND_SAVEPOINT else "transaction"
        return UnexpectedRollback(
            f"The {where} was rolled back although this unit was leaving normally: a flush or "
            "a statement inside it failed and the error was caught, which leaves a "
            f"{where} that can no longer commit (PostgreSQL aborts it; SQLAlchemy needs a "
            "rollback). Run the statement that may fail in its own savepoint, "
            "'with db.unit_of_work(propagation=Propagation.NESTED):', and catch the error "
            "outside that block; or let the error propagate."
        )


def _active_for_entry(
    stack: tuple[UnitOfWork, ...], me: int, task: object | None, propagation: Propagation
) -> UnitOfWork | None:
    """The unit a new unit of this thread (and task) would join, skipping ended ones."""
    unit = innermost_live(stack)
    if unit is None:
        return None
    if unit._thread == me and unit._task is not task:
        if task is None:
            raise UnitOfWorkError(_SYNC_IN_ASYNC)
        if propagation in _NEVER_JOIN_FOREIGN:
            return None
        if unit._task is None:
            raise UnitOfWorkError(_ASYNC_IN_SYNC)
        raise UnitOfWorkError(_OTHER_TASK)
    if unit._thread != me:
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


def current_unit(runtime: Runtime) -> UnitOfWork | None:
    """The innermost active unit of this thread that has a transaction, or None."""
    stack = runtime.units.get()
    if not stack:
        return None
    unit = stack[-1]
    if unit._state is not STATE_ACTIVE:
        found = innermost_live(stack)
        if found is None:
            return None
        unit = found
    if unit._thread != get_ident() or unit._kind is KIND_NONE:
        return None
    if unit._task is not None and unit._task is not _running_task():
        return None
    return unit


def _running_task() -> object | None:
    from ._aio import running_task

    return running_task()


_OTHER_TASK = (
    "The active unit of work belongs to another asyncio task (this task was created inside "
    "it, with create_task, gather or a TaskGroup, and inherited its context), and tasks "
    "never share a session: they would interleave statements on one connection. Open a "
    "unit in this task with propagation=Propagation.REQUIRES_NEW (or @db.transactional("
    "propagation=Propagation.REQUIRES_NEW) on the coroutine the task runs), or await the "
    "work in the task that owns the unit instead of starting a task for it."
)

_SYNC_IN_ASYNC = (
    "A synchronous unit of work (a 'with' block or a @db.transactional def) cannot run "
    "inside an async unit on the event loop's thread: it would block the loop and could not "
    "share the unit's AsyncSession. Make the service async ('async with db.unit_of_work()' "
    "or @db.transactional on an 'async def'), or run it in a worker thread with "
    "asyncio.to_thread and propagation=Propagation.REQUIRES_NEW."
)

_ASYNC_IN_SYNC = (
    "An async unit of work cannot join the synchronous unit active in this thread: its "
    "Session is not an AsyncSession. Open the async unit with "
    "propagation=Propagation.REQUIRES_NEW, or run the async code after the sync unit ends."
)


class AsyncUnit(Protocol):
    """What ``async with db.unit_of_work() as uow`` gives: the unit, with an AsyncSession.

    It is the same ``UnitOfWork`` object; this type tells mypy that its ``session`` is
    the unit's ``AsyncSession``.
    """

    @property
    def session(self) -> AsyncUnitSession: ...
    @property
    def async_session(self) -> AsyncUnitSession: ...
    @property
    def state(self) -> UnitState: ...
    @property
    def kind(self) -> UnitKind | None: ...
    @property
    def outcome(self) -> Outcome | None: ...
    @property
    def is_outermost(self) -> bool: ...
    @property
    def will_roll_back(self) -> bool: ...
    @property
    def opened_at(self) -> str | None: ...
    @property
    def failed_during_commit(self) -> bool: ...
    @property
    def scope(self) -> object | None: ...
    @property
    def is_async(self) -> bool: ...
    @property
    def timeouts(self) -> Timeouts | None: ...
    @property
    def origin(self) -> Origin: ...

    propagation: Propagation
    read_only: bool
    isolation_level: str | None

    def on_commit(self, callback: Callable[[], Any]) -> None: ...
    def on_rollback(self, callback: Callable[[], Any]) -> None: ...
    def on_outcome_unknown(self, callback: Callable[[], Any]) -> None: ...
    def set_rollback(self) -> None: ...
    def will_retry(self, error: BaseException) -> bool: ...


def why_no_session(runtime: Runtime) -> str:
    """Explain why ``db.session`` has nothing to resolve to here, and what to do."""
    unit = innermost_live(runtime.units.get())
    if unit is not None and unit._thread == get_ident() and unit._task is not None:
        if unit._task is not _running_task():
            return "db.session was used in another task than its unit's. " + _OTHER_TASK
    if unit is not None and unit._thread != get_ident():
        return (
            "db.session was used in a thread whose context was copied from another thread's "
            "unit of work, and a Session must not be shared between threads. Open a unit here "
            "with propagation=Propagation.REQUIRES_NEW (or @db.transactional on the function "
            "the thread runs, with that propagation), or start the thread without copying the "
            "context."
        )
    if unit is not None and unit._kind is KIND_NONE:
        return unit._no_transaction_message()
    return (
        "db.session was used outside a unit of work, so there is no transaction to run in. "
        "Open one around the calling code: decorate the service function with "
        "@db.transactional, or wrap the call in 'with db.unit_of_work():'."
    )


def live_units(runtime: Runtime) -> list[UnitOfWork]:
    """The active units of this context, outermost first (for safety nets)."""
    return [unit for unit in runtime.units.get() if unit._state is STATE_ACTIVE]
