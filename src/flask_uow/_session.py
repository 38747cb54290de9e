"""The Session class handed out by units of work, and the proxy behind ``db.session``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction, scoped_session
from sqlalchemy.util import ScopedRegistry

from ._errors import ReadOnlyViolation, UnitOfWorkError

if TYPE_CHECKING:
    from ._unit import UnitOfWork


class UnitSession(Session):
    """A ``Session`` whose transaction belongs to a unit of work.

    While its unit is active, ``commit()`` and ``close()`` raise ``UnitOfWorkError``: the
    unit commits when it ends normally, rolls back when it ends with an error or after
    ``set_rollback()``, and always closes. ``rollback()`` raises too, except while the unit
    is already bound to roll back (an exception is being handled around it): then it rolls
    back at once and the unit ends with ROLLBACK, as after ``set_rollback()``.

    Every session of one ``Database`` is an instance of ``db.session_class``, a subclass of
    this class made for that Database: listen to ``db.session`` (or ``db.session_class``)
    for that Database's sessions, to ``UnitSession`` for all of flask-uow's.
    """

    flask_uow_unit: UnitOfWork | None = None
    """The outermost unit that owns this session while it is active, else None."""

    flask_uow_read_only: bool = False
    flask_uow_flushing: bool = False

    def commit(self) -> None:
        if self.flask_uow_unit is not None:
            raise UnitOfWorkError(
                "session.commit() was called inside a unit of work. The unit commits by itself "
                "when its 'with' block or decorated function ends normally; remove the call. "
                "To commit part of the work on its own, run it in "
                "db.unit_of_work(propagation=Propagation.REQUIRES_NEW)."
            )
        super().commit()

    def rollback(self) -> None:
        unit = self.flask_uow_unit
        if unit is not None:
            if not unit.will_roll_back:
                raise UnitOfWorkError(
                    "session.rollback() was called inside a unit of work that was going to "
                    "commit. Raise an exception, or call set_rollback() on the unit "
                    "(db.current.set_rollback()) to end it with ROLLBACK; to undo only part "
                    "of the work, use db.unit_of_work(propagation=Propagation.NESTED)."
                )
            # The unit rolls back anyway (an error is being handled): do it now, so that the
            # session can still run queries (an error page), and end the unit with ROLLBACK.
            unit.set_rollback()
        super().rollback()

    def close(self) -> None:
        if self.flask_uow_unit is not None:
            raise UnitOfWorkError(
                "session.close() was called inside a unit of work. The unit closes its session "
                "when it ends; remove the call."
            )
        super().close()

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        # Remember whether a failure came from a flush or from the COMMIT after it: only a
        # connection lost during COMMIT leaves the outcome unknown.
        self.flask_uow_flushing = True
        Session.flush(self, objects)
        self.flask_uow_flushing = False


def end_commit(session: UnitSession) -> None:
    """COMMIT on behalf of the unit: ``before_commit`` listeners run first, then the flush."""
    session.flask_uow_flushing = False
    Session.commit(session)


def end_rollback(session: UnitSession) -> None:
    """ROLLBACK the session's transaction on behalf of its unit."""
    Session.rollback(session)


def end_close(session: UnitSession) -> None:
    """Close the session on behalf of its unit; an open transaction is rolled back."""
    session.flask_uow_unit = None
    Session.close(session)


def failed_in_commit(session: UnitSession, error: BaseException) -> bool:
    """True when ``error`` came from the COMMIT statement itself, not from a flush before it."""
    return (
        not session.flask_uow_flushing
        and isinstance(error, DBAPIError)
        and error.statement is None
    )


def transaction_aborted(session: UnitSession, *, server_check: bool) -> bool:
    """True when the transaction can no longer commit what the unit did.

    That is after a failed flush (SQLAlchemy's "partial rollback" state), and, with
    ``server_check``, after a failed statement on PostgreSQL (the server aborts the whole
    transaction and would answer COMMIT with ROLLBACK). Elsewhere a failed statement undoes
    only itself, and a transaction the server rolled back fails loudly at COMMIT.
    """
    if session.flask_uow_flushing and not session.is_active:
        return True
    if not server_check:
        return False
    transaction = session.get_transaction()
    if transaction is None:
        return False
    # One bind per unit session: its connection is the first entry (there is no public
    # accessor for a transaction's connections, and session.connection() would check one out).
    for connection, *_ in transaction._connections.values():
        info = getattr(connection.connection.dbapi_connection, "info", None)
        return bool(getattr(info, "transaction_status", None) == _LIBPQ_INERROR)
    return False


_LIBPQ_INERROR = 3
"""libpq's PQTRANS_INERROR, as psycopg and psycopg2 report it: the transaction is aborted."""


def rollback_savepoint(session: UnitSession, savepoint: SessionTransaction) -> None:
    """Roll back to a savepoint and release it, whatever state a failure left it in.

    SQLAlchemy's own rollback restores the session's objects. It emits ROLLBACK TO when the
    savepoint is still active; a failed flush already did; after a failed RELEASE nobody
    did, so it is sent here. The RELEASE after it frees the savepoint on the server, so a
    loop of failing savepoints does not pile them up.
    """
    # The savepoint's own SessionTransaction knows the SAVEPOINT it began on each
    # connection (there is no public accessor); read it before rolling back closes it.
    begun = [
        (connection, nested, nested.is_active, connection.get_nested_transaction() is nested)
        for connection, nested, *_ in set(savepoint._connections.values())
    ]
    if session.get_nested_transaction() is savepoint:
        savepoint.rollback()
    session.flask_uow_flushing = False
    for connection, nested, was_active, still_current in begun:
        name = nested._savepoint  # type: ignore[attr-defined]
        if not was_active and still_current:  # its RELEASE failed: nothing was rolled back
            connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")


class _UnitRegistry(ScopedRegistry[UnitSession]):
    """The registry behind ``SessionProxy``: the current unit's session, or an error."""

    def __init__(self, resolve: Callable[[], UnitSession]) -> None:
        self.resolve = resolve

    def __call__(self) -> UnitSession:
        return self.resolve()

    def has(self) -> bool:
        return True

    def set(self, obj: UnitSession) -> NoReturn:
        raise UnitOfWorkError("db.session always is the current unit's session; it cannot be set.")

    def clear(self) -> NoReturn:
        _refuse_remove()


def _refuse_remove() -> NoReturn:
    raise UnitOfWorkError(
        "db.session.remove() is not needed with flask-uow: each unit of work closes its own "
        "session when it ends. Remove the call (a Flask-SQLAlchemy teardown, say)."
    )


class SessionProxy(scoped_session[UnitSession]):
    """``db.session`` outside a unit: resolves to the current unit's session on every use.

    Capture it at import time (``sqlalchemy_session = db.session`` for factory_boy,
    ``event.listen(db.session, "before_commit", fn)``): each attribute or method used on it
    is the one of the innermost active unit's session in this thread. Used with no unit
    active it raises ``NoActiveUnitOfWork``; it never creates a session of its own.
    Listening to it listens to every session of its Database.
    """

    def __init__(
        self, session_class: type[UnitSession], resolve: Callable[[], UnitSession]
    ) -> None:
        self.session_factory = session_class  # type: ignore[assignment]
        self.registry = _UnitRegistry(resolve)

    def __repr__(self) -> str:
        return "<SessionProxy: the current unit of work's session>"

    def remove(self) -> NoReturn:
        _refuse_remove()

    def configure(self, **kwargs: Any) -> NoReturn:
        raise UnitOfWorkError(
            "Session options of flask-uow units are set on the Database: "
            "Database(session_options={...}) or the UOW_SESSION_OPTIONS config key."
        )


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
