"""The Session class handed out by units of work: the unit, not the caller, ends it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from ._errors import ReadOnlyViolation, UnitOfWorkError


class UnitSession(Session):
    """A ``Session`` whose transaction belongs to a unit of work.

    While its unit is active, ``commit()``, ``rollback()`` and ``close()`` raise
    ``UnitOfWorkError``: the unit commits when it ends normally, rolls back when it ends
    with an error or after ``set_rollback()``, and always closes.
    """

    flask_uow_active: bool = False
    flask_uow_read_only: bool = False

    def commit(self) -> None:
        if self.flask_uow_active:
            raise UnitOfWorkError(
                "session.commit() was called inside a unit of work. The unit commits by itself "
                "when its 'with' block or decorated function ends normally; remove the call. "
                "To commit part of the work on its own, run it in "
                "db.unit_of_work(propagation=Propagation.REQUIRES_NEW)."
            )
        super().commit()

    def rollback(self) -> None:
        if self.flask_uow_active:
            raise UnitOfWorkError(
                "session.rollback() was called inside a unit of work. Raise an exception, or "
                "call set_rollback() on the unit (db.current.set_rollback()) to end it with "
                "ROLLBACK; to undo only part of the work, use "
                "db.unit_of_work(propagation=Propagation.NESTED)."
            )
        super().rollback()

    def close(self) -> None:
        if self.flask_uow_active:
            raise UnitOfWorkError(
                "session.close() was called inside a unit of work. The unit closes its session "
                "when it ends; remove the call."
            )
        super().close()


def end_commit(session: UnitSession) -> None:
    """COMMIT the session's transaction on behalf of its unit."""
    Session.commit(session)


def end_rollback(session: UnitSession) -> None:
    """ROLLBACK the session's transaction on behalf of its unit."""
    Session.rollback(session)


def end_close(session: UnitSession) -> None:
    """Close the session on behalf of its unit; an open transaction is rolled back."""
    session.flask_uow_active = False
    Session.close(session)


def holds_connection(session: Session | None) -> bool:
    """True when the session's transaction has checked out a connection."""
    if session is None:
        return False
    transaction = session.get_transaction()
    # SessionTransaction keeps the connections it began in _connections; there is no public
    # accessor, and asking session.connection() would check one out.
    return bool(transaction is not None and transaction._connections)


@event.listens_for(UnitSession, "before_flush")
def _refuse_flush_in_read_only_unit(
    session: UnitSession, flush_context: UOWTransaction, instances: Any
) -> None:
    if session.flask_uow_read_only:
        raise ReadOnlyViolation(
            "A read-only unit of work tried to write: "
            f"{len(session.new)} new, {len(session.dirty)} changed and {len(session.deleted)} "
            "deleted objects were about to be flushed. Open the unit with read_only=False, or "
            "do not modify objects inside it (session.expunge() an object to change it in memory "
            "only)."
        )
