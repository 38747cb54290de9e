"""The Session class handed out by units of work, and the proxy behind ``db.session``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction, scoped_session
from sqlalchemy.util import ScopedRegistry

from ._engines import END_WITH_ROLLBACK
from ._errors import NoActiveUnitOfWork, ReadOnlyViolation, UnitOfWorkError
from ._retry import is_transient

if TYPE_CHECKING:
    from ._unit import UnitOfWork


SESSION_COMMIT_MODES = ("raise", "savepoint")
"""What ``session.commit()`` and ``session.rollback()`` do inside a unit (``session_commit``)."""


_SESSION_PARAMETERS = frozenset(inspect.signature(Session).parameters) - {"bind", "binds"}
_RESERVED_SESSION_OPTIONS = frozenset({"bind", "binds", "autobegin", "join_transaction_mode"})


def check_session_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate Session options, adding flask-uow's defaults."""
    reserved = _RESERVED_SESSION_OPTIONS.intersection(options)
    if reserved:
        raise ValueError(
            f"Session option(s) {sorted(reserved)} are managed by flask-uow: each unit binds "
            "its session and begins its transaction itself. Remove them from session_options."
        )
    unknown = set(options) - _SESSION_PARAMETERS
    if unknown:
        raise ValueError(
            f"Unknown Session option(s) {sorted(unknown)}; session_options takes the keyword "
            "arguments of sqlalchemy.orm.Session."
        )
    merged = {"expire_on_commit": False, "close_resets_only": False}
    merged.update(options)
    return merged


def check_session_commit(mode: object) -> str:
    """Validate ``Database(session_commit=)`` / ``UOW_SESSION_COMMIT``."""
    if mode not in SESSION_COMMIT_MODES:
        raise ValueError(
            f"session_commit takes 'raise' (the default: session.commit() inside a unit is an "
            f"error) or 'savepoint' (it releases a savepoint and the unit still decides), got "
            f"{mode!r}."
        )
    return str(mode)


class UnitSession(Session):
    """A ``Session`` whose transaction belongs to a unit of work.

    While its unit is active, ``close()`` raises ``UnitOfWorkError``: the unit commits when
    it ends normally, rolls back when it ends with an error or after ``set_rollback()``, and
    always closes. What ``commit()`` and ``rollback()`` do depends on the Database's
    ``session_commit``:

    - ``"raise"`` (the default): both raise ``UnitOfWorkError``, except ``rollback()`` while
      the unit is already bound to roll back (an exception is being handled around it):
      then it rolls back at once and the unit ends with ROLLBACK, as after
      ``set_rollback()``.
    - ``"savepoint"``, for code written for Flask-SQLAlchemy (Flask-Admin, Flask-Security,
      factory_boy): ``commit()`` flushes and marks a point in the unit's transaction: it
      RELEASEs the point the previous ``commit()`` made, if any, and sends a SAVEPOINT.
      Nothing is COMMITted: the unit's end decides, as always. ``rollback()`` rolls back to
      the last point (``ROLLBACK TO SAVEPOINT``, then RELEASE and a new SAVEPOINT), or,
      before the first ``commit()``, ROLLs BACK the transaction; the unit goes on (in a new
      transaction, begun on first use). Inside a ``NESTED`` unit both raise: its savepoint
      is the point, ending its block releases or rolls it back.

    Every session of one ``Database`` is an instance of ``db.session_class``, a subclass of
    this class made for that Database: listen to ``db.session`` (or ``db.session_class``)
    for that Database's sessions, to ``UnitSession`` for all of flask-uow's.
    """

    flask_uow_unit: UnitOfWork | None = None
    """The outermost unit that owns this session while it is active, else None."""

    flask_uow_read_only: bool = False
    flask_uow_flushing: bool = False
    flask_uow_session_commit: str = "raise"
    """``"raise"`` or ``"savepoint"``: set on ``db.session_class`` by the Database."""
    flask_uow_point: SessionTransaction | None = None
    """The savepoint the last ``commit()`` began (``"savepoint"`` mode), while it is open."""
    flask_uow_point_at: tuple[Connection, str]
    """The connection and name of ``flask_uow_point`` on the server."""

    def commit(self) -> None:
        """Inside a unit, refused by default: the unit sends COMMIT when it ends normally.

        With ``session_commit="savepoint"`` it flushes, releases the savepoint of the last
        ``commit()`` and opens a new one: the work is kept, and committed (or rolled back)
        with the whole unit when the unit ends. Outside a unit, SQLAlchemy's own COMMIT.
        """
        if self.flask_uow_unit is None:
            super().commit()
            return
        if self.flask_uow_session_commit != "savepoint":
            raise UnitOfWorkError(
                "session.commit() was called inside a unit of work. The unit commits by itself "
                "when its 'with' block or decorated function ends normally; remove the call. "
                "To commit part of the work on its own, run it in "
                "db.unit_of_work(propagation=Propagation.REQUIRES_NEW). Code you cannot change "
                "(an extension written for Flask-SQLAlchemy) works with "
                "Database(session_commit='savepoint') or UOW_SESSION_COMMIT = 'savepoint'."
            )
        self._refuse_inside_nested_unit("commit")
        self.flush()
        point = self.flask_uow_point
        if point is not None:
            self.flask_uow_point = None
            point.commit()  # RELEASE SAVEPOINT: its work joins the unit's transaction
        if self.get_transaction() is not None:
            self._begin_point()
        # else nothing ran yet: a rollback() before the next commit() undoes only what follows

    def rollback(self) -> None:
        """Inside a unit that is about to fail, ROLLBACK now and end the unit with ROLLBACK.

        Inside a unit that was going to commit it is refused by default; with
        ``session_commit="savepoint"`` it rolls back to the savepoint of the last ``commit()``
        (before the first one, the unit's whole transaction) and the unit goes on. Outside a
        unit, SQLAlchemy's own ROLLBACK.
        """
        unit = self.flask_uow_unit
        if unit is None:
            super().rollback()
            return
        if unit.will_roll_back:
            # The unit rolls back anyway (an error is being handled): do it now, so that the
            # session can still run queries (an error page), and end the unit with ROLLBACK.
            unit.set_rollback()
            self.flask_uow_point = None
            super().rollback()
            return
        if self.flask_uow_session_commit != "savepoint":
            raise UnitOfWorkError(
                "session.rollback() was called inside a unit of work that was going to "
                "commit. Raise an exception, or call set_rollback() on the unit "
                "(db.current.set_rollback()) to end it with ROLLBACK; to undo only part "
                "of the work, use db.unit_of_work(propagation=Propagation.NESTED). Code you "
                "cannot change (an extension written for Flask-SQLAlchemy) works with "
                "Database(session_commit='savepoint') or UOW_SESSION_COMMIT = 'savepoint'."
            )
        self._refuse_inside_nested_unit("rollback")
        self.flask_uow_flushing = False
        point = self.flask_uow_point
        if point is None:
            # Before the first commit(): undo all of the unit's work; the unit goes on.
            super().rollback()
            return
        self.flask_uow_point = None
        connection, name = self.flask_uow_point_at
        point.rollback()  # ROLLBACK TO SAVEPOINT (unless a failed flush already sent it)
        connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")  # no pile of savepoints
        self._begin_point()

    def _begin_point(self) -> None:
        self.flask_uow_point = self.begin_nested()
        connection = self.connection()  # sends the SAVEPOINT
        nested = connection.get_nested_transaction()
        assert nested is not None
        # The savepoint's name, for the RELEASE after rolling back to it: a failed flush
        # closes the connection's NestedTransaction, and there is no public accessor.
        self.flask_uow_point_at = (connection, nested._savepoint)

    def _refuse_inside_nested_unit(self, what: str) -> None:
        nested = self.get_nested_transaction()
        if nested is not None and nested is not self.flask_uow_point:
            raise UnitOfWorkError(
                f"session.{what}() was called inside a NESTED unit of work. Its savepoint is "
                "the point to return to: leave its block normally to keep its work, or raise "
                "(or call set_rollback()) to undo it; call session.commit() and "
                "session.rollback() only outside NESTED units."
            )

    def begin_nested(self) -> SessionTransaction:
        """SAVEPOINT, after flushing what is pending: a NESTED unit enters through here.

        SQLAlchemy flushes pending objects before it sends the SAVEPOINT, so their failure
        is not the savepoint's to catch: it dooms the enclosing transaction. Raised as a
        ``UnitOfWorkError`` that says so, instead of surfacing later as a
        ``PendingRollbackError`` whose advice (``Session.rollback()``) does not apply.
        Transient errors (which a retry may fix) and flask-uow's own are raised unchanged.
        """
        if self.flask_uow_unit is None:
            return super().begin_nested()
        if not (
            self._flushing or self._new or self._deleted or self.identity_map.check_modified()
        ):
            # Nothing pending (Session._is_clean()): what flush() would do, without its calls.
            self.flask_uow_flushing = False
        else:
            try:
                self.flush()
            except DBAPIError as error:
                if is_transient(error):
                    raise  # a deadlock or a lost connection: a retry may succeed
                raise UnitOfWorkError(
                    "Objects added to or changed in the session before this savepoint (a "
                    "NESTED unit) failed to flush as the SAVEPOINT was about to open, so the "
                    f"savepoint cannot undo the failure ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}) and the enclosing unit can no longer "
                    "commit. Make and add those objects inside the NESTED block (an object "
                    "whose constructor adds itself to the session, or one attached to a "
                    "loaded object through a relationship, is pending from the moment it is "
                    "made), or flush them before the block where their failure is handled."
                ) from error
        return super().begin_nested()

    def close(self) -> None:
        """Refused inside a unit (the unit closes its session when it ends); else closes."""
        if self.flask_uow_unit is not None:
            raise UnitOfWorkError(
                "session.close() was called inside a unit of work. The unit closes its session "
                "when it ends; remove the call."
            )
        super().close()

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """Send pending changes in the unit's transaction; nothing is committed by it."""
        # Remember whether a failure came from a flush or from the COMMIT after it: only a
        # connection lost during COMMIT leaves the outcome unknown.
        self.flask_uow_flushing = True
        Session.flush(self, objects)
        self.flask_uow_flushing = False


def send_rollback(session: UnitSession) -> None:
    """Send ROLLBACK for the unit's transaction (a read-only one's too, which never COMMITs)."""
    if not session.flask_uow_read_only:
        Session.rollback(session)
        return
    fairies = _read_only_connections(session)
    for fairy in fairies:
        fairy.info[END_WITH_ROLLBACK] = True
    try:
        Session.rollback(session)
    finally:
        for fairy in fairies:
            fairy.info.pop(END_WITH_ROLLBACK, None)


def _read_only_connections(session: UnitSession) -> list[Any]:
    """The pooled connections of a read-only session's transaction that are still usable."""
    transaction = session.get_transaction()
    if transaction is None:
        return []
    fairies = []
    for connection, *_ in transaction._connections.values():
        if not connection.invalidated and not connection.closed:
            fairies.append(connection.connection)
    return fairies


def failed_in_commit(session: UnitSession, error: BaseException) -> bool:
    """True when ``error`` came from the COMMIT statement itself, not from a flush before it.

    A driver error says so itself (it has no statement). Anything else (a KeyboardInterrupt,
    a cancellation, a driver's own bug) struck during COMMIT when the connection's
    transaction was already on its way out: SQLAlchemy deactivates it once COMMIT is sent.
    """
    if session.flask_uow_flushing:
        return False
    if isinstance(error, DBAPIError):
        return error.statement is None
    transaction = session.get_transaction()
    if transaction is None:
        return False
    # No public accessor for a session transaction's connections (as in transaction_aborted).
    return any(not begun.is_active for _, begun, *_ in transaction._connections.values())


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
    # The root transaction (Session.get_transaction(), without its call).
    transaction = session._transaction
    if transaction is None:
        return False
    while transaction._parent is not None:
        transaction = transaction._parent
    # One bind per unit session: its connection is the first entry (there is no public
    # accessor for a transaction's connections, and session.connection() would check one out).
    for connection, *_ in transaction._connections.values():
        pooled = connection._dbapi_connection  # Connection.connection, without its call
        if pooled is None:
            pooled = connection.connection  # invalidated: what the property says about it
        driver = pooled.dbapi_connection
        # psycopg 3's own status, an int; psycopg.Connection.info builds an object and an
        # enum member for it. psycopg2 has only ``info``.
        pgconn = getattr(driver, "pgconn", None)
        if pgconn is not None:
            return bool(pgconn.transaction_status == _LIBPQ_INERROR)
        info = getattr(driver, "info", None)
        return bool(getattr(info, "transaction_status", None) == _LIBPQ_INERROR)
    return False


def connection_lost(session: UnitSession) -> bool:
    """True when the connection of the session's transaction was invalidated (it is gone)."""
    transaction = session.get_transaction()
    if transaction is None:
        return False
    return any(connection.invalidated for connection, *_ in transaction._connections.values())


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
        self.session_class = session_class
        self.registry = _UnitRegistry(resolve)

    def __repr__(self) -> str:
        return "<SessionProxy: the current unit of work's session>"

    def remove(self) -> None:
        """Refused, except outside units in ``"savepoint"`` mode: nothing to close there.

        So the teardown lines of an extension's quickstart (``db_session.remove()``) can stay.
        """
        if not self._nothing_to_close():
            _refuse_remove()

    def close(self) -> None:
        """The current unit's ``close()`` (which raises); outside units, as ``remove()``."""
        if not self._nothing_to_close():
            self.registry().close()

    def _nothing_to_close(self) -> bool:
        if self.session_class.flask_uow_session_commit != "savepoint":
            return False
        try:
            self.registry()
        except NoActiveUnitOfWork:
            return True
        return False

    def configure(self, **kwargs: Any) -> NoReturn:
        """Refused: session options belong to the Database, which makes each unit's session."""
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
