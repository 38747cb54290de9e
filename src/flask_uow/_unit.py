"""The unit of work: one transaction boundary, entered and ended as a context manager."""

from __future__ import annotations

import enum
import os
import sys
from threading import get_ident
from types import CodeType, FrameType, TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.orm import SessionTransaction

from ._engines import normalize_isolation_level
from ._errors import NoActiveUnitOfWork, ReadOnlyViolation, UnexpectedRollback, UnitOfWorkError
from ._hooks import Hook, logger, run_hooks
from ._propagation import Propagation
from ._replicas import parse_token
from ._retry import is_transient
from ._session import UnitSession, end_close, end_commit, end_rollback

if TYPE_CHECKING:
    from ._database import Database
    from ._engines import EngineVariants

_PACKAGE_DIR = os.path.dirname(__file__)


class UnitState(enum.Enum):
    """Where a unit is in its life: it moves NEW -> ACTIVE -> ENDED, once."""

    NEW = "new"
    ACTIVE = "active"
    ENDED = "ended"


class UnitKind(enum.Enum):
    """What entering a unit turned out to do, decided by its propagation and the active unit."""

    OUTERMOST = "outermost"
    """Owns a session and its transaction: commits or rolls back at the end."""

    SAVEPOINT = "savepoint"
    """Owns a SAVEPOINT in the active unit's transaction: releases or rolls back to it."""

    JOINED = "joined"
    """Shares the active unit's transaction: a failure dooms it, success changes nothing."""


class UnitOfWork:
    """One transaction boundary. Create it with ``db.unit_of_work()`` and use it in ``with``.

    Entering decides, from its propagation and the unit already active in this thread,
    whether it starts a transaction (outermost), opens a SAVEPOINT, or joins. Ending it:

    - an outermost unit leaving normally COMMITs, then closes its session and runs its
      ``on_commit`` hooks; leaving with any exception, or after ``set_rollback()``, it
      ROLLs BACK, closes and runs its ``on_rollback`` hooks. The exception is re-raised
      unchanged.
    - a savepoint unit leaving normally releases the SAVEPOINT and hands its hooks to the
      enclosing unit; otherwise it rolls back to the SAVEPOINT and discards its hooks.
    - a joined unit leaving with an exception, or after ``set_rollback()``, dooms the
      transaction it joined, which then rolls back and raises ``UnexpectedRollback`` if it
      was leaving normally. Nothing is rolled back silently.

    A unit is used once and only in the thread that entered it.
    """

    __slots__ = (
        "propagation",
        "read_only",
        "isolation_level",
        "_db",
        "_state",
        "_kind",
        "_thread",
        "_root",
        "_owner",
        "_session",
        "_savepoint",
        "_commit_hooks",
        "_rollback_hooks",
        "_rollback_requested",
        "_doomed_by",
        "_failed_during_commit",
        "_opened_at",
        "_app_context",
        "_engines",
        "_retries_left",
        "_enclosing",
        "after",
    )

    def __init__(
        self,
        db: Database,
        *,
        propagation: Propagation = Propagation.REQUIRED,
        read_only: bool = False,
        isolation_level: str | None = None,
        after: str | None = None,
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
        self._db = db
        self._state = UnitState.NEW
        self._kind: UnitKind | None = None
        self._thread = get_ident()
        self._root: UnitOfWork = self
        self._owner: UnitOfWork = self
        self._session: UnitSession | None = None
        self._savepoint: SessionTransaction | None = None
        self._commit_hooks: list[Hook] = []
        self._rollback_hooks: list[Hook] = []
        self._rollback_requested = False
        self._doomed_by: BaseException | str | None = None
        self._failed_during_commit = False
        self._opened_at: tuple[CodeType, int] | None = None
        self._app_context: object | None = None
        self._engines: EngineVariants | None = None
        self._retries_left = 0
        self._enclosing: UnitOfWork | None = None  # a savepoint's enclosing owner
        self.after = parse_token(after)
        """The causal position a read-only outermost unit must see (from ``after=token``)."""

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
        root = self._root
        if root._thread != get_ident():
            raise UnitOfWorkError(
                "This unit of work belongs to another thread, and a Session must not be shared "
                "between threads. Open a unit in this thread instead (db.unit_of_work() or "
                "@db.transactional); pass ids, not ORM objects or sessions, to other threads."
            )
        if self._state is not UnitState.ACTIVE:
            raise UnitOfWorkError(
                f"This unit of work is {self._state.value}: its session exists only inside its "
                "'with' block or decorated function. Open a new unit to run more queries."
            )
        session = root._session
        if session is None:
            session = root._session = self._db._new_session(root)
        return session

    @property
    def is_outermost(self) -> bool:
        """True when this unit owns its transaction (it will COMMIT or ROLLBACK)."""
        return self._kind is UnitKind.OUTERMOST

    def on_commit(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction COMMITs and its session is closed.

        Registered in a joined unit or a savepoint, it belongs to the transaction that
        finally commits; it never runs if that transaction rolls back.
        """
        self._require_active("on_commit")
        self._owner._commit_hooks.append(callback)

    def on_rollback(self, callback: Hook) -> None:
        """Call ``callback()`` once after the transaction ROLLs BACK and its session is closed."""
        self._require_active("on_rollback")
        self._owner._rollback_hooks.append(callback)

    def set_rollback(self) -> None:
        """End this unit with ROLLBACK instead of COMMIT, without raising an exception.

        On an outermost unit or a savepoint this quietly rolls back its own work. On a
        joined unit it dooms the transaction it joined (see ``UnexpectedRollback``).
        """
        self._require_active("set_rollback")
        self._rollback_requested = True

    # -- entering ----------------------------------------------------------------------------

    def __enter__(self) -> UnitOfWork:
        if self._state is not UnitState.NEW:
            raise UnitOfWorkError(
                "A UnitOfWork can be entered only once; call db.unit_of_work() for a new one."
            )
        self._thread = me = get_ident()
        db = self._db
        propagation = self.propagation
        stack = db._stack.get()
        active = stack[-1] if stack else None
        if active is not None and active._thread != me:
            # A context copied from another thread: never share that thread's session.
            active = db._active(allow_foreign=propagation is Propagation.REQUIRES_NEW)
        if active is None or propagation is Propagation.REQUIRES_NEW:
            if propagation is Propagation.MANDATORY:
                raise NoActiveUnitOfWork(
                    "A unit with propagation=MANDATORY needs an active unit of work to join, and "
                    "none is active in this thread. Call it from inside 'with db.unit_of_work():' "
                    "or a @db.transactional function."
                )
            db._begin_outermost(self)
            self._kind = UnitKind.OUTERMOST
        else:
            if active._root.read_only and not self.read_only:
                raise ReadOnlyViolation(
                    "A read-write unit of work cannot join a read-only one. Give the inner call "
                    "read_only=True, or open the outer unit with read_only=False."
                )
            self._root = active._root
            if propagation is Propagation.NESTED:
                self._savepoint = active.session.begin_nested()
                self._enclosing = active._owner
                self._kind = UnitKind.SAVEPOINT
            else:
                self._owner = active._owner
                self._kind = UnitKind.JOINED
        self._state = UnitState.ACTIVE
        db._stack.set((*stack, self))
        return self

    # -- ending ------------------------------------------------------------------------------

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state is not UnitState.ACTIVE:
            raise UnitOfWorkError(f"This unit of work is {self._state.value}; it cannot end again.")
        kind = self._kind
        if kind is UnitKind.OUTERMOST:
            self._end_outermost(exc)
        elif kind is UnitKind.SAVEPOINT:
            self._end_savepoint(exc)
        else:
            self._end_joined(exc)

    def _end_joined(self, exc: BaseException | None) -> None:
        self._finish()
        if exc is not None:
            self._owner._doomed_by = exc
        elif self._rollback_requested:
            self._owner._doomed_by = "set_rollback() was called in a joined unit"

    def _end_outermost(self, exc: BaseException | None) -> None:
        session = self._session
        if exc is None and self._doomed_by is None and not self._rollback_requested:
            if session is not None:
                try:
                    # A read-only unit with pending changes fails here with
                    # ReadOnlyViolation rather than dropping them silently.
                    session.flush()
                    if not self.read_only:
                        self._failed_during_commit = True
                        end_commit(session)
                except BaseException as error:
                    self._discard(session)
                    self._finish()
                    self._db._counters.count_end(committed=False)
                    if not self.will_retry(error):
                        run_hooks(self._rollback_hooks, "on_rollback")
                    raise
                self._close_quietly(session)
                if not self.read_only:
                    self._db._committed(self)
            self._finish()
            self._db._counters.count_end(committed=True)
            if self._commit_hooks:
                run_hooks(self._commit_hooks, "on_commit")
            return
        self._discard(session)
        self._finish()
        self._db._counters.count_end(committed=False)
        if exc is None or not self.will_retry(exc):
            run_hooks(self._rollback_hooks, "on_rollback")
        if exc is None and not self._rollback_requested:
            raise self._unexpected_rollback()

    def _end_savepoint(self, exc: BaseException | None) -> None:
        savepoint = self._savepoint
        assert savepoint is not None
        if exc is None and self._doomed_by is None and not self._rollback_requested:
            try:
                savepoint.commit()
            except BaseException:
                self._rollback_savepoint(savepoint)
                self._finish()
                raise
            self._finish()
            enclosing = self._enclosing
            assert enclosing is not None
            enclosing._commit_hooks.extend(self._commit_hooks)
            enclosing._rollback_hooks.extend(self._rollback_hooks)
            return
        self._rollback_savepoint(savepoint)
        self._finish()
        if exc is None and not self._rollback_requested:
            raise self._unexpected_rollback()

    def _rollback_savepoint(self, savepoint: SessionTransaction) -> None:
        # A flush that failed inside the savepoint leaves it deactivated but current;
        # it still has to be rolled back for the enclosing transaction to go on.
        if savepoint.session.get_nested_transaction() is savepoint:
            try:
                savepoint.rollback()
            except Exception:
                logger.warning(
                    "flask-uow: rolling back to a savepoint failed; the enclosing transaction "
                    "will fail too",
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

    def _finish(self) -> None:
        self._state = UnitState.ENDED
        self._db._pop(self)

    def _unexpected_rollback(self) -> UnexpectedRollback:
        cause = self._doomed_by
        where = "the savepoint" if self._kind is UnitKind.SAVEPOINT else "the transaction"
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

    def _require_active(self, what: str) -> None:
        if self._state is not UnitState.ACTIVE:
            raise UnitOfWorkError(
                f"{what}() needs an active unit of work, and this one is {self._state.value}. "
                "Call it inside the unit's 'with' block or decorated function."
            )

    def _abandon(self) -> None:
        """Roll back an outermost unit that was never ended (its context is going away)."""
        self._discard(self._session)
        self._finish()
        self._db._counters.count_end(committed=False)
        run_hooks(self._rollback_hooks, "on_rollback")

    def _note_origin(self) -> None:
        """Remember the first caller outside flask-uow, to name it in warnings."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            frame = frame.f_back
        if frame is not None:
            self._opened_at = (frame.f_code, frame.f_lineno)

    @property
    def opened_at(self) -> str | None:
        """Where this unit was entered (file:line in function), recorded in Flask app contexts."""
        if self._opened_at is None:
            return None
        code, line = self._opened_at
        return f"{code.co_filename}:{line} in {code.co_name}"

    def will_retry(self, error: BaseException) -> bool:
        """True when ``@db.transactional(retries=...)`` will run this unit again after ``error``.

        An attempt that will be retried is invisible: none of its hooks run.
        """
        return (
            self._retries_left > 0
            and self._kind is UnitKind.OUTERMOST
            and is_transient(error, during_commit=self._failed_during_commit)
        )

    @property
    def failed_during_commit(self) -> bool:
        """True when the unit failed while sending COMMIT, so the outcome may be unknown."""
        return self._failed_during_commit
