"""Exceptions and warnings raised by flask-uow."""

from __future__ import annotations


class UnitOfWorkError(RuntimeError):
    """A unit of work was used in a way that cannot keep the transaction correct.

    The message always says what to change.
    """


class NoActiveUnitOfWork(UnitOfWorkError):
    """Code asked for the current session (or a MANDATORY unit) outside any unit of work."""


class UnexpectedRollback(UnitOfWorkError):
    """The transaction was rolled back although the unit was leaving normally.

    A joined unit failed or called ``set_rollback()``, a flush failed and was caught, or a
    statement failed and left the database transaction aborted: the transaction could no
    longer commit. The rollback already happened; this error makes sure it is never silent.
    """


class ReadOnlyViolation(UnitOfWorkError):
    """A read-only unit tried to write, or a read-write unit tried to join a read-only one."""


class CommitOutcomeUnknown(UnitOfWorkError):
    """The connection was lost while COMMIT was on its way: it may or may not have committed.

    The driver's error is the ``__cause__``. Neither ``on_commit`` nor ``on_rollback`` hooks
    ran (``on_outcome_unknown`` hooks did), and the unit is never retried: look the work up, or
    make it idempotent, before doing it again.

    ``message_ids`` names the outbox messages enqueued in that transaction (empty without an
    outbox): whether they were stored is unknown too.
    """

    def __init__(self, message: str, *, message_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message_ids = message_ids
        """The ids of the outbox messages enqueued in the transaction whose outcome is unknown."""


class UnitOfWorkWarning(RuntimeWarning):
    """A unit of work was left open and flask-uow had to end it."""


class UnitTimeout(UnitOfWorkError):
    """A unit's ``lock_timeout`` or ``statement_timeout`` expired; its transaction rolled back.

    The message names where the unit was opened; the driver's error is the ``__cause__``.
    ``kind`` is ``"lock"`` or ``"statement"`` and ``seconds`` the limit that expired. A lock
    timeout is retried by ``@db.transactional(retries=...)`` only with
    ``retry_lock_timeouts=True``; a statement timeout never is.
    """

    def __init__(self, message: str, *, kind: str, seconds: float) -> None:
        super().__init__(message)
        self.kind = kind
        """``"lock"`` or ``"statement"``."""
        self.seconds = seconds
        """The limit that expired, in seconds."""


class DoomReason(str):
    """Why a transaction was doomed, in words that explain themselves and name the fix:
    ``UnexpectedRollback`` quotes it as it is (other reasons are what a joined unit did)."""

    __slots__ = ()
