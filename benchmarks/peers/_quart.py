"""What the two Quart apps share: the ledger's JSON errors, ``GET /bench/noop``, and requests
that run to their end when the client goes away."""

from __future__ import annotations

import asyncio
from typing import Any

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


class FinishDisconnected:
    """ASGI middleware: a request whose client has gone runs to its end, as a WSGI request
    does under gunicorn, instead of being cancelled.

    Quart cancels a request's task when the server reports that the client disconnected, and
    wrk drops the requests it has in flight whenever a run ends. Cancelled in the middle of a
    statement, a bare ``AsyncSession`` has been seen to put a psycopg connection back into the
    pool still in pipeline mode (later requests on it fail), and aiosqlite connections of
    both apps to keep the SQLite file locked; neither is what this benchmark measures, so
    neither app sees the disconnect.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def receive_until_disconnect() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                await asyncio.Event().wait()  # until Quart cancels its reader as the view ends
            return message

        await self.app(scope, receive_until_disconnect, send)


def register(app: Quart) -> None:
    """JSON errors as the ledger answers them (its handlers are Flask's), the no-database
    endpoint the harness polls until the app is up, and :class:`FinishDisconnected`."""
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.asgi_app = FinishDisconnected(app.asgi_app)  # type: ignore[method-assign]
    app.register_error_handler(errors.LedgerError, ledger_error)
    app.register_error_handler(HTTPException, http_error)
    app.add_url_rule("/bench/noop", "noop", noop, methods=["GET"])
