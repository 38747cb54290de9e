"""What the two Quart apps share: the ledger's JSON errors, and ``GET /bench/noop``."""

from __future__ import annotations

from quart import Quart, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from ledger import errors, schemas
from ledger.errorhandlers import STATUS


def status_of(error: errors.LedgerError) -> int:
    """The status the ledger answers a domain error with (``ledger.errorhandlers.STATUS``)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def ledger_error(error: errors.LedgerError) -> ResponseReturnValue:
    return schemas.error(error.code, error.message), status_of(error)


async def http_error(error: HTTPException) -> ResponseReturnValue:
    code = (error.name or "error").lower().replace(" ", "_")
    return schemas.error(code, error.description or error.name or "error"), error.code or 500


async def request_body() -> bytes:
    """The request's body, as the WSGI apps read it."""
    data = await request.get_data(as_text=False)
    assert isinstance(data, bytes)
    return data


async def noop() -> ResponseReturnValue:
    return {"ok": True}


def register(app: Quart) -> None:
    """JSON errors as the ledger answers them (its handlers are Flask's), and the no-database
    endpoint the harness polls until the app is up."""
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.register_error_handler(errors.LedgerError, ledger_error)
    app.register_error_handler(HTTPException, http_error)
    app.add_url_rule("/bench/noop", "noop", noop, methods=["GET"])
