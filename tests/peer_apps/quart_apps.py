"""The ledger's three hot endpoints on Quart: ``create_uow_app`` with flask-uow's async
services, ``create_bare_app`` with ``async_sessionmaker.begin()`` blocks; inside their
transactions both run the same code (``customer_of``, ``statement_of``, ``transfer_in``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

from quart import Quart, request
from quart.typing import ResponseReturnValue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from werkzeug.exceptions import HTTPException

from flask_uow import Database
from ledger.http import schemas
from ledger.http.body import json_object
from ledger.http.errorhandlers import STATUS
from ledger.models import Account, Base
from ledger.services import errors, notifications
from ledger.services.errors import NotFound, SameAccount
from ledger.views import ID

from . import views
from .settings import async_database_url, database_url, engine_options, read_write_engines

# -- what runs inside the transaction, on either app's session -------------------------------


async def customer_of(session: AsyncSession, customer_id: int) -> dict[str, Any]:
    found = (await session.scalars(views.customer_query(customer_id))).one_or_none()
    if found is None:
        raise NotFound("customer", customer_id)
    return views.customer(found)


async def statement_of(session: AsyncSession, account_id: int) -> list[dict[str, Any]]:
    if await session.get(Account, account_id) is None:
        raise NotFound("account", account_id)
    return [views.transfer(t) for t in await session.scalars(views.transfers_query(account_id))]


async def transfer_in(session: AsyncSession, data: SimpleNamespace) -> dict[str, Any]:
    # Lock both rows in ascending id order, as the ledger does.
    ids = sorted((data.from_account, data.to_account))
    row = views.move(data, {i: (await session.scalars(views.lock_query(i))).one_or_none()
                            for i in ids})
    session.add(row)
    await session.flush()
    return views.transfer(row)


def notify(body: dict[str, Any]) -> None:
    notifications.transfer_completed(
        body["id"], body["from_account"], body["to_account"], body["amount"]
    )


# -- flask-uow ---------------------------------------------------------------------------------

db = Database(metadata=Base.metadata)


@db.transactional(read_only=True)
async def uow_customer(customer_id: int) -> dict[str, Any]:
    return await customer_of(db.async_session, customer_id)


@db.transactional(read_only=True)
async def uow_statement(account_id: int) -> list[dict[str, Any]]:
    return await statement_of(db.async_session, account_id)


@db.transactional(retries=3)
async def uow_transfer(data: SimpleNamespace) -> dict[str, Any]:
    body = await transfer_in(db.async_session, data)
    db.on_commit(partial(notify, body))
    return body


def create_uow_app() -> Quart:
    app = _app(uow_customer, uow_statement, uow_transfer)
    app.config.update(
        UOW_DATABASE_URL=database_url(), UOW_ENGINE_OPTIONS=engine_options(), UOW_PER_REQUEST=False
    )
    db.init_app(app)
    return app


# -- bare AsyncSession -------------------------------------------------------------------------


def create_bare_app() -> Quart:
    read_write, read_only = read_write_engines(
        create_async_engine(async_database_url(), **engine_options())
    )
    writes = async_sessionmaker(read_write, expire_on_commit=False)
    reads = async_sessionmaker(read_only, expire_on_commit=False)

    async def customer(customer_id: int) -> dict[str, Any]:
        async with reads.begin() as session:
            return await customer_of(session, customer_id)

    async def statement(account_id: int) -> list[dict[str, Any]]:
        async with reads.begin() as session:
            return await statement_of(session, account_id)

    async def transfer(data: SimpleNamespace) -> dict[str, Any]:
        async with writes.begin() as session:
            body = await transfer_in(session, data)
        notify(body)
        return body

    app = _app(customer, statement, transfer)

    @app.after_serving
    async def close_connections() -> None:
        await read_write.dispose()  # async connections belong to the serving loop

    return app


# -- the views and what both apps share --------------------------------------------------------


def _app(
    customer: Callable[[int], Awaitable[dict[str, Any]]],
    statement: Callable[[int], Awaitable[list[dict[str, Any]]]],
    transfer: Callable[[SimpleNamespace], Awaitable[dict[str, Any]]],
) -> Quart:
    """A Quart app serving the three endpoints with these services, JSON errors as the ledger
    answers them (its handlers are Flask's), ``GET /bench/noop`` (the harness polls it until
    the app is up) and :class:`FinishDisconnected`."""
    app = Quart(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.asgi_app = FinishDisconnected(app.asgi_app)  # type: ignore[method-assign]

    @app.get(f"/customers/<{ID}:customer_id>")
    async def get_customer(customer_id: int) -> ResponseReturnValue:
        return await customer(customer_id)

    @app.get(f"/accounts/<{ID}:account_id>/transfers")
    async def account_transfers(account_id: int) -> ResponseReturnValue:
        return {"items": await statement(account_id)}

    @app.post("/transfers")
    async def create_transfer() -> ResponseReturnValue:
        body = await request.get_data(as_text=False)  # as the WSGI apps read it
        data = schemas.NEW_TRANSFER.parse(json_object(body))  # type: ignore[arg-type]
        if data.from_account == data.to_account:
            raise SameAccount(data.from_account)
        return await transfer(data), 201

    @app.get("/bench/noop")
    async def noop() -> ResponseReturnValue:
        return {"ok": True}

    @app.errorhandler(errors.LedgerError)
    async def ledger_error(error: errors.LedgerError) -> ResponseReturnValue:
        status = next((STATUS[c] for c in type(error).__mro__ if c in STATUS), 400)
        return schemas.error(error.code, error.message), status

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> ResponseReturnValue:
        code = (error.name or "error").lower().replace(" ", "_")
        return schemas.error(code, error.description or error.name or "error"), error.code or 500

    return app


class FinishDisconnected:
    """ASGI middleware: a request whose client has gone (wrk drops its requests in flight at
    the end of every run) runs to its end, as under gunicorn, instead of being cancelled by
    Quart mid-statement, which has left psycopg connections in pipeline mode in the pool and
    aiosqlite connections holding the SQLite file's lock."""

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
