"""The record of one transaction: what the units that run in it share, in one object."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from sqlalchemy.orm import Session

from ._errors import DoomReason
from ._hooks import Hook, logger
from ._session import (
    UnitSession,
    connection_lost,
    rollback_savepoint,
    send_rollback,
)
from ._timeouts import engine_with

if TYPE_CHECKING:
    from sqlalchemy.orm import SessionTransaction

    from ._aio import AsyncUnitSession
    from ._engines import EngineVariants, ReadRouting
    from ._runtime import Runtime
    from ._timeouts import Timeouts
    from ._unit import UnitOfWork


REPLICA_ATTEMPTS = 3
"""Replicas a read-only unit tries to connect to before it runs on the primary."""


class Transaction:
    """What the units of one transaction share: its session, hooks, doom and rollback request.

    The outermost unit creates it when it is entered and owns it; a unit that joins holds
    the same record. A savepoint unit owns a record nested in the enclosing one
    (``enclosing``): it shares that record's session, thread and task, and has hooks, doom
    and a rollback request of its own, which join the enclosing record's only when the
    savepoint is released. A unit that runs with no transaction has a record with no
    session, which says only in which thread and task it runs. Units change a record only
    through its methods.
    """

    __slots__ = (
        "root",
        "enclosing",
        "savepoint",
        "thread",
        "task",
        "engines",
        "replicas",
        "timeouts",
        "session",
        "async_session",
        "commit_hooks",
        "rollback_hooks",
        "unknown_hooks",
        "doomed_by",
        "rollback_requested",
    )

    def __init__(
        self,
        root: UnitOfWork,
        thread: int,
        task: object | None,
        engines: EngineVariants | None = None,
        replicas: ReadRouting | None = None,
        timeouts: Timeouts | None = None,
        session: UnitSession | None = None,
        async_session: AsyncUnitSession | None = None,
        enclosing: Transaction | None = None,
        savepoint: SessionTransaction | None = None,
    ) -> None:
        self.root = root
        """The outermost unit, which began the transaction and COMMITs or ROLLs it BACK."""
        self.enclosing = enclosing
        """A savepoint's enclosing record, which its hooks join when it is released."""
        self.savepoint = savepoint
        """A savepoint's SAVEPOINT, as SQLAlchemy's nested transaction."""
        self.thread = thread
        """The thread that entered the units of this transaction (the only one to use it)."""
        self.task = task
        """The asyncio task that owns it (async units), or None."""
        self.engines = engines
        """The engines of the outermost unit (None under ``flask_uow.testing.isolated()``)."""
        self.replicas = replicas
        """The read replicas of a sync outermost unit, or None."""
        self.timeouts = timeouts
        """The statement and lock timeouts the transaction runs with, or None."""
        self.session = session
        """The Session, once a unit used it: no unit that runs no SQL opens one."""
        self.async_session = async_session
        """The AsyncSession wrapping ``session`` (async units)."""
        # Tuples, replaced on registration: most units register no hook, and build nothing.
        self.commit_hooks: tuple[Hook, ...] = ()
        self.rollback_hooks: tuple[Hook, ...] = ()
        self.unknown_hooks: tuple[Hook, ...] = ()
        self.doomed_by: BaseException | str | None = None
        """Why it can no longer commit (what a joined unit raised, or a description)."""
        self.rollback_requested = False
        """``set_rollback()`` was called on the unit that owns this record."""

    # -- what units register and report ---------------------------------------------------

    def add_commit_hook(self, callback: Hook) -> None:
        """Run ``callback`` after this transaction COMMITs (a savepoint's: once released)."""
        self.commit_hooks = (*self.commit_hooks, callback)

    def add_rollback_hook(self, callback: Hook) -> None:
        """Run ``callback`` after this transaction (or savepoint) ROLLs BACK."""
        self.rollback_hooks = (*self.rollback_hooks, callback)

    def add_unknown_hook(self, callback: Hook) -> None:
        """Run ``callback`` if the connection is lost while this transaction's COMMIT is sent."""
        self.unknown_hooks = (*self.unknown_hooks, callback)

    def request_rollback(self) -> None:
        """Its owner will end with ROLLBACK (or ROLLBACK TO SAVEPOINT) instead of committing."""
        self.rollback_requested = True

    def doom(self, cause: BaseException | str) -> None:
        """Make it unable to commit: its owner will roll back and raise UnexpectedRollback."""
        self.doomed_by = cause

    @property
    def will_roll_back(self) -> bool:
        """True when this record, or the whole transaction's, can no longer commit."""
        if self.rollback_requested or self.doomed_by is not None:
            return True
        outermost = self
        while outermost.enclosing is not None:
            outermost = outermost.enclosing
        return outermost.rollback_requested or outermost.doomed_by is not None

    def keep_doom_reason_only(self) -> None:
        """Forget the error that doomed it, keeping that it did: its traceback holds the
        frames of the failure and what they held (a driver's cursor, which SQLite keeps
        locking while its statement lives), as long as the ended unit lives."""
        doomed_by = self.doomed_by
        if doomed_by is not None and not isinstance(doomed_by, str):
            self.doomed_by = f"{type(doomed_by).__name__} was raised"

    def hand_hooks_to_enclosing(self) -> None:
        """A released savepoint's hooks join its enclosing record's, after theirs."""
        enclosing = self.enclosing
        assert enclosing is not None
        enclosing.commit_hooks += self.commit_hooks
        enclosing.rollback_hooks += self.rollback_hooks
        enclosing.unknown_hooks += self.unknown_hooks

    # -- its session ------------------------------------------------------------------------

    def open_session(self, runtime: Runtime) -> UnitSession:
        """Create the transaction's Session; the first SQL it runs checks a connection out
        (a replica's for a read-only unit when replicas are configured) and BEGINs."""
        root = self.root
        read_only = root.read_only
        isolation_level = root.isolation_level
        isolation = runtime.isolation
        if isolation is not None and isolation.async_connection is not None:
            wrapper = self.async_session = runtime.async_session_class()(
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
        elif self.task is None:
            engines = self.engines
            assert engines is not None
            on_replica = None
            if read_only and self.replicas is not None:
                on_replica = self._session_on_a_replica(runtime, self.replicas)
            if on_replica is not None:
                session = on_replica
            else:
                if read_only or isolation_level is not None:
                    bind = engines.for_unit(read_only=read_only, isolation_level=isolation_level)
                else:
                    bind = engines.read_write  # the common unit's, without the call
                if self.timeouts is not None:
                    bind = engine_with(bind, self.timeouts)
                session = runtime.session_class(bind=bind, **runtime.session_options)
        else:
            from ._aio import open_async_session

            engines = self.engines
            assert engines is not None
            wrapper = self.async_session = open_async_session(
                runtime.async_session_class(),
                engines,
                runtime.session_options,
                read_only=read_only,
                isolation_level=isolation_level,
                timeouts=self.timeouts,
            )
            session = cast(UnitSession, wrapper.sync_session)
        self.session = session
        session.flask_uow_unit = root
        session.flask_uow_read_only = read_only
        return session

    def _session_on_a_replica(self, runtime: Runtime, replicas: ReadRouting) -> UnitSession | None:
        """A session holding a replica's connection already, or None: run on the primary.

        The connection is checked out here rather than at the first statement, so that a
        replica that went down since it was chosen fails before any SQL ran: the replica is
        left out, and the unit asks for another one, or runs on the primary. A read-only
        unit never fails for a replica's sake.
        """
        root = self.root
        for _ in range(REPLICA_ATTEMPTS):
            choice = replicas.engine_for_read(root.after, isolation_level=root.isolation_level)
            if choice.engine is None:
                return None
            bind = choice.engine
            if self.timeouts is not None:
                bind = engine_with(bind, self.timeouts)
            session = runtime.session_class(bind=bind, **runtime.session_options)
            try:
                session.connection()
            except BaseException as error:
                Session.close(session)
                if not isinstance(error, Exception):
                    raise  # interrupted while connecting: the unit ends, then re-raises
                replicas.replica_failed(choice, error)
                continue
            return session
        return None

    def roll_back_and_close(self) -> None:
        """Send ROLLBACK and close the session, never raising: the caller's exception matters
        more (a ROLLBACK that fails, on a lost connection, is logged; closing invalidates it)."""
        session = self.session
        if session is None:
            return
        try:
            send_rollback(session)
        except Exception:
            logger.warning(
                "flask-uow: ROLLBACK failed (the connection is probably gone); closing the "
                "session invalidates it",
                exc_info=True,
            )
        except BaseException:  # interrupted: SQLAlchemy dropped the connection; let it go
            self.close_session()
            raise
        self.close_session()

    def close_session(self) -> None:
        """Close the session after COMMIT (a read-only unit: instead of it, which ROLLs BACK),
        which lets it go: a transaction still open is rolled back (a healthy psycopg read-only
        one is committed instead, see ``_engines``). A failure is logged: the outcome can no
        longer change."""
        session = self.session
        assert session is not None
        session.flask_uow_unit = None
        try:
            Session.close(session)
        except Exception:
            logger.warning("flask-uow: closing the session failed", exc_info=True)

    def roll_back_savepoint(self) -> None:
        """Send ROLLBACK TO and RELEASE SAVEPOINT. If that fails, the savepoint's work may
        still be in the transaction: the enclosing record is doomed (it must not commit).

        If the connection was lost on the way (SQLAlchemy drops it when a cancellation or a
        KeyboardInterrupt interrupts a statement), the whole transaction is gone: every
        enclosing record is doomed with that reason and the session is rolled back now, so
        that the enclosing units end rolled back with UnexpectedRollback saying why, never
        with SQLAlchemy's PendingRollbackError. An interruption is re-raised after that. A
        savepoint of a transaction so lost sends nothing: there is nothing to roll back to.
        """
        session = self.session
        savepoint = self.savepoint
        enclosing = self.enclosing
        assert session is not None and savepoint is not None and enclosing is not None
        if self.doomed_by is TRANSACTION_LOST:
            return  # a savepoint inside it was: this one went with the transaction
        try:
            rollback_savepoint(session, savepoint)
        except BaseException as error:
            interrupted = not isinstance(error, Exception)
            if not connection_lost(session):
                enclosing.doom(error)  # its work may still be in the transaction
                if interrupted:  # the unit ends, then re-raises it
                    raise
                logger.warning(
                    "flask-uow: rolling back to a savepoint failed; the enclosing transaction "
                    "will roll back too",
                    exc_info=True,
                )
                return
            record: Transaction | None = enclosing
            while record is not None:
                record.doom(TRANSACTION_LOST)
                record = record.enclosing
            try:
                send_rollback(session)  # on a dropped connection: only the session's state
            except Exception:
                logger.warning("flask-uow: rolling back a lost transaction failed", exc_info=True)
            if interrupted:
                raise


TRANSACTION_LOST = DoomReason(
    "rolling back to a savepoint inside it was interrupted (a cancellation, an "
    "asyncio.timeout() or KeyboardInterrupt) or failed, and the connection was closed on the "
    "way, taking the whole transaction with it. Nothing of it was committed; statements run "
    "after that went to a new transaction, which was rolled back too. To keep the "
    "enclosing transaction, let a savepoint end before cancelling its task (put "
    "asyncio.timeout() around the whole unit of work, not inside a savepoint), or retry the "
    "whole unit."
)
"""The reason of the doom of a transaction lost while rolling back to one of its savepoints."""
