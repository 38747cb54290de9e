"""The unit of work: one transaction boundary, entered and ended as a context manager."""

from __future__ import annotations

import functools
from threading import get_ident
from types import CodeType, TracebackType
from typing import TYPE_CHECKING, cast

import sqlalchemy as sa
from greenlet import getcurrent  # type: ignore[import-untyped]

from ._async_unit import AsyncUnit as AsyncUnit
from ._engines import normalize_isolation_level
from ._errors import (
    NoActiveUnitOfWork,
    UnitOfWorkError,
)
from ._hooks import Hook, check_hook, run_hooks
from ._lifecycle import (
    KIND_JOINED,
    KIND_NONE,
    KIND_OUTERMOST,
    STATE_ACTIVE,
    STATE_ENDED,
    STATE_INVALIDATED,
    STATE_NEW,
    Outcome,
    UnitKind,
    UnitState,
)
from ._propagation import (
    PROPAGATION_NESTED,
    PROPAGATION_REQUIRED,
    Propagation,
)
from ._retry import is_transient
from ._session import (
    UnitSession,
)
from ._timeouts import Seconds, Timeouts
from ._unit_entering import UnitEntering, innermost_live
from ._unit_fields import UnitExtras
from ._unit_messages import OTHER_TASK, OTHER_THREAD_ENDS

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ._aio import AsyncUnitSession
    from ._runtime import Runtime
    from ._transaction import Transaction

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


class UnitOfWork(UnitEntering):
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

    __slots__ = ()  # the fields are UnitFields'

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
        self._runtime = runtime
        if (
            statement_timeout is None
            and lock_timeout is None
            and not retry_lock_timeouts
            and retries_left == 0
            and attempt == 1
        ):
            self._extras = None  # the common case: nothing more was asked; made when needed
        else:
            timeouts = (
                None
                if statement_timeout is None and lock_timeout is None and not retry_lock_timeouts
                else Timeouts.from_options(statement_timeout, lock_timeout, retry_lock_timeouts)
            )
            self._extras = UnitExtras(timeouts, None, retries_left, attempt)
        self._state = STATE_NEW
        self._kind = None
        self._outcome = None
        self._rollback_requested = False  # set_rollback() was called on this unit
        self._origin = origin
        self._site = site  # where db.unit_of_work() was called; origin is worked out on demand
        self._scope = None
        # Set when entered: _tx, the Transaction record this unit runs in (its own when it
        # begins the transaction or a savepoint, the active unit's when it joins), and
        # _token, to leave the ambient stack. Set when invalidated: _invalidated_by.

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
        record = self._tx
        if record.thread != get_ident():
            raise UnitOfWorkError(
                "This unit of work belongs to another thread, and a Session must not be shared "
                "between threads. Open a unit in this thread instead (db.unit_of_work() or "
                "@db.transactional); pass ids, not ORM objects or sessions, to other threads."
            )
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(self._no_transaction_message())
        if record.task is not None and not _in_greenlet():
            return cast(UnitSession, self.async_session)
        session = record.session
        if session is None:
            session = record.open_session(self._runtime)
        return session

    @property
    def async_session(self) -> AsyncUnitSession:
        """The ``AsyncSession`` of an async unit: what ``session`` is there, typed as such.

        Only the task that entered the unit may use it: a task created inside the unit
        (``create_task``, ``gather``, ``TaskGroup``) opens its own unit instead.
        """
        if self._state is not STATE_ACTIVE:
            raise UnitOfWorkError(self._not_active("its session exists only inside it"))
        record = self._tx
        if record.task is None:
            raise UnitOfWorkError(
                "This unit of work was entered with 'with', so it has a synchronous Session: "
                "use uow.session. Enter it with 'async with' for an AsyncSession."
            )
        if record.thread != get_ident() or record.task is not _running_task():
            raise UnitOfWorkError(OTHER_TASK)
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(self._no_transaction_message())
        if record.session is None:
            record.open_session(self._runtime)
        session = record.async_session
        assert session is not None
        return session

    @property
    def is_async(self) -> bool:
        """True when this unit was entered with ``async with`` (its session is an AsyncSession)."""
        return self._state is not STATE_NEW and self._tx.task is not None

    @property
    def attempt(self) -> int:
        """1 for a first run; 2 and more for the retries of ``@db.transactional(retries=)``."""
        extras = self._extras
        return 1 if extras is None else extras.attempt

    @property
    def after(self) -> int | None:
        """The causal position a read-only outermost unit must see (``after=token``)."""
        extras = self._extras
        return None if extras is None else extras.after

    @after.setter
    def after(self, position: int | None) -> None:
        self._extras_made().after = position

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
        if self._rollback_requested:
            return True
        return self._state is not STATE_NEW and self._tx.will_roll_back

    @property
    def timeouts(self) -> Timeouts | None:
        """The statement and lock timeouts of the transaction this outermost unit began."""
        return self._tx.timeouts if self._kind is KIND_OUTERMOST else None

    @property
    def root(self) -> UnitOfWork:
        """The outermost unit whose transaction this unit runs in (itself when outermost)."""
        return self if self._state is STATE_NEW else self._tx.root

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
        if self._kind is not KIND_OUTERMOST:
            return None
        engines = self._tx.engines
        if engines is not None:
            return engines.engine
        isolation = self._runtime.isolation
        if isolation is not None:
            return isolation.connection.engine
        return None

    @property
    def retries_left(self) -> int:
        """How many more times ``@db.transactional(retries=...)`` may run this unit again."""
        extras = self._extras
        return 0 if extras is None else extras.retries_left

    @property
    def scope(self) -> object | None:
        """What the framework integration said this unit was opened in (a Flask app context)."""
        return self._scope

    def on_commit(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction COMMITs and its session is closed.

        Registered in a joined unit or a savepoint, it belongs to the transaction that
        finally commits; it never runs if that transaction rolls back.
        """
        self._record_for_hooks("on_commit", callback).add_commit_hook(callback)

    def on_rollback(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction ROLLs BACK and its session is closed."""
        self._record_for_hooks("on_rollback", callback).add_rollback_hook(callback)

    def on_outcome_unknown(self, callback: Hook) -> None:
        """Call ``callback()`` once if the connection is lost while COMMIT is on its way.

        Then nobody knows whether the server committed; neither ``on_commit`` nor
        ``on_rollback`` hooks run, and ``CommitOutcomeUnknown`` is raised.
        """
        self._record_for_hooks("on_outcome_unknown", callback).add_unknown_hook(callback)

    def set_rollback(self) -> None:
        """End this unit with ROLLBACK instead of COMMIT, without raising an exception.

        On an outermost unit or a savepoint this quietly rolls back its own work. On a
        joined unit it dooms the transaction it joined (see ``UnexpectedRollback``).
        """
        self._require_transaction("set_rollback")
        self._rollback_requested = True
        if self._kind is not KIND_JOINED:  # its own record: units that joined it see it too
            self._tx.request_rollback()

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
        if self.retries_left <= 0 or self._kind is not KIND_OUTERMOST:
            return False
        record = self._tx
        timeouts = record.timeouts
        if timeouts is not None:
            retryable = timeouts.retryable(error)
            if retryable is not None:
                return retryable
        return is_transient(error, during_commit=self.failed_during_commit)

    @property
    def holds_rollback_hooks(self) -> bool:
        """True when this unit ran no ``on_rollback`` hooks because a retry was to follow."""
        extras = self._extras
        return extras is not None and extras.rollback_hooks_held

    def call_off_retry(self) -> None:
        """Run the ``on_rollback`` hooks this unit held back for a retry that will not come.

        An attempt that ``@db.transactional(retries=...)`` runs again is invisible: none of
        its hooks run. When the retry is called off instead (the task is cancelled while the
        attempt ends or while it waits to retry), that attempt was the last one, and its
        ``on_rollback`` hooks run, as a last attempt's do. Its transaction has already
        rolled back; a unit that holds no hooks is left alone.
        """
        extras = self._extras
        if extras is not None and extras.rollback_hooks_held:
            extras.rollback_hooks_held = False
            run_hooks(self._tx.rollback_hooks, "on_rollback")

    @property
    def failed_during_commit(self) -> bool:
        """True when the COMMIT statement itself failed (not a flush or a statement before it)."""
        extras = self._extras
        return extras is not None and extras.failed_during_commit

    def abandon(self) -> None:
        """End this unit from outside its ``with`` block: roll back what it touched.

        For safety nets (a Flask app context ending, ``flask_uow.testing.isolated()``):
        an outermost unit rolls back, closes and runs its ``on_rollback`` hooks; a savepoint
        rolls back to its SAVEPOINT; a joined unit dooms the transaction it joined. Units
        entered after it that are still active are abandoned first.
        """
        if self._state is STATE_INVALIDATED:
            self._move_to(STATE_ENDED)
            return
        if self._state is not STATE_ACTIVE:
            return
        if self._tx.thread != get_ident():
            raise UnitOfWorkError(f"{OTHER_THREAD_ENDS} (opened at {self.opened_at})")
        for above in reversed(self._units_above()):
            above.abandon()
        reason = UnitOfWorkError(f"the unit of work opened at {self.opened_at} was never ended")
        self._end(reason)

    __enter__ = UnitEntering._enter  # ``with``: no extra call on the sync hot path

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

    def _record_for_hooks(self, what: str, callback: object) -> Transaction:
        """The record ``callback`` joins, once checked (the unit's own, or the one it joined)."""
        state = self._state
        check_hook(callback, what, allow_async=state is not STATE_NEW and self._tx.task is not None)
        if state is not STATE_ACTIVE or self._kind is KIND_NONE:
            self._require_transaction(what)  # raises, saying why
        return self._tx

    def _require_transaction(self, what: str) -> None:
        if self._state is not STATE_ACTIVE:
            raise UnitOfWorkError(self._not_active(f"{what}() needs an active unit of work"))
        if self._kind is KIND_NONE:
            raise NoActiveUnitOfWork(
                f"{what}() needs a transaction, and this unit runs with none "
                f"(propagation={self.propagation.name}). {self._no_transaction_message()}"
            )


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
    record = unit._tx
    if record.thread != get_ident() or unit._kind is KIND_NONE:
        return None
    if record.task is not None and record.task is not _running_task():
        return None
    return unit


def _in_greenlet() -> bool:
    """True in sync code an AsyncSession runs (``run_sync``, event listeners): there
    ``db.session`` is the unit's sync Session, whose calls send their SQL at once."""
    return bool(getattr(getcurrent(), "__sqlalchemy_greenlet_provider__", False))


def _running_task() -> object | None:
    from ._aio import running_task

    return running_task()


def why_no_session(runtime: Runtime) -> str:
    """Explain why ``db.session`` has nothing to resolve to here, and what to do."""
    unit = innermost_live(runtime.units.get())
    record = unit._tx if unit is not None else None
    if record is not None and record.thread == get_ident() and record.task is not None:
        if record.task is not _running_task():
            return "db.session was used in another task than its unit's. " + OTHER_TASK
    if record is not None and record.thread != get_ident():
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
