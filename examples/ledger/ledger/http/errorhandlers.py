"""Every error leaves the app as ``{"error": {"code": ..., "message": ...}}``.

Domain errors get the status their meaning calls for; Werkzeug's HTTP errors (unknown route,
wrong method, body too large) keep their status and headers, such as ``Allow`` on a 405; a
database that is unreachable, or a COMMIT whose outcome is unknown, answers 503 with
``Retry-After``; anything else is logged with its
traceback and answered with a bare 500, never the traceback or SQL.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from flask_uow import CommitOutcomeUnknown, is_transient

from ..services import errors
from . import schemas
from .body import MalformedBody

STATUS: dict[type[errors.LedgerError], int] = {
    MalformedBody: 400,
    errors.ValidationError: 422,
    errors.SameAccount: 422,
    errors.NotFound: 404,
    errors.DuplicateEmail: 409,
    errors.InsufficientFunds: 409,
    errors.BalanceLimitExceeded: 409,
    errors.IdempotencyConflict: 409,
}
"""HTTP status of each domain error; a subclass not listed here inherits its base's status."""


def _status_of(exc: errors.LedgerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def _error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(schemas.error(code, message))
    response.status_code = status
    return response


def handle_ledger_error(exc: errors.LedgerError) -> Response:
    return _error_response(_status_of(exc), exc.code, exc.message)


def handle_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    response = _error_response(status, code, exc.description or exc.name or "error")
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _database_unavailable(exc: OperationalError) -> bool:
    """True when trying again later may work: no connection, or a transient conflict.

    ``flask_uow.is_transient`` is the classification ``@db.transactional(retries=...)`` uses
    (deadlocks, serialization failures, lock timeouts, a lost connection); an error that got
    here outlived the service's retries. A connection never made has no statement.
    """
    return exc.statement is None or is_transient(exc)


def handle_operational_error(exc: OperationalError) -> Response:
    # The database is unreachable or gave up on this transaction (a lost connection, a
    # deadlock that outlived its retries): the client may try again shortly. One line in
    # the log, not a traceback per request while a database is down. Anything else
    # (SQLite reports a missing table this way too) is a bug: a 500.
    if not _database_unavailable(exc):
        return handle_unexpected_error(exc)
    current_app.logger.warning("database unavailable: %s", type(exc.orig or exc).__name__)
    response = _error_response(
        503, "database_unavailable", "the database is unavailable; try again shortly"
    )
    response.headers["Retry-After"] = "1"
    return response


def handle_outcome_unknown(exc: CommitOutcomeUnknown) -> Response:
    # The connection was lost while COMMIT was on its way: the transfer may or may not be
    # stored. Retrying with the same Idempotency-Key is safe either way: a stored transfer
    # is replayed, a lost one is made again.
    current_app.logger.warning("commit outcome unknown: %s", type(exc.__cause__).__name__)
    response = _error_response(
        503,
        "outcome_unknown",
        "the database connection was lost while saving; retry with the same Idempotency-Key",
    )
    response.headers["Retry-After"] = "1"
    return response


def handle_unexpected_error(exc: Exception) -> Response:
    current_app.logger.error("unhandled error", exc_info=exc)
    return _error_response(500, "internal_error", "an unexpected error occurred")


def register(app: Flask) -> None:
    """Install the handlers app-wide, so unknown routes and methods answer in JSON too."""
    app.register_error_handler(errors.LedgerError, handle_ledger_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(CommitOutcomeUnknown, handle_outcome_unknown)
    app.register_error_handler(Exception, handle_unexpected_error)
