"""The ledger's hot endpoints on Quart with bare SQLAlchemy: an ``AsyncSession`` per request.

Reads use ``async with reads.begin() as session:`` on a read-only engine, writes
``async with writes.begin() as session:``: both commit at the end of the block and roll back
on error, as flask-uow's read-only and read-write units do. One stock ``create_async_engine``
per app (the pool of ``settings.engine_options``, on the async driver flask-uow picks),
configured as SQLAlchemy's documentation says for each backend:

- PostgreSQL: reads with ``postgresql_readonly=True`` (psycopg sends ``BEGIN READ ONLY``);
- MariaDB: reads send ``SET TRANSACTION READ ONLY`` first;
- SQLite: the documented aiosqlite recipe for real transactions (driver transactions off,
  ``BEGIN`` from a ``begin`` listener), ``BEGIN IMMEDIATE`` for writes, as flask-uow sends.

A transfer sends the same notification after COMMIT as the flask-uow twin's ``on_commit``.

Served by hypercorn as ``'benchmarks.peers.quart_sqlalchemy_app:create_app()'``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Quart, current_app
from quart.typing import ResponseReturnValue
from sqlalchemy import event, or_, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import selectinload

from ledger import notifications, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Customer, Transfer

from . import _quart, shapes
from .settings import async_database_url, engine_options

EXTENSION_KEY = "bench-async-sessionmakers"


def engines(url: str, options: dict[str, Any]) -> tuple[AsyncEngine, AsyncEngine]:
    """(read-write, read-only) async engines on one pool, configured as described above."""
    engine = create_async_engine(url, **options)
    name = engine.dialect.name
    if name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def begin(connection: sa.Connection) -> None:
            immediate = connection.get_execution_options().get("bench_write_lock")
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine.execution_options(bench_write_lock=True), engine
    if name == "postgresql":
        return engine, engine.execution_options(postgresql_readonly=True)
    read_only = engine.execution_options(bench_read_only=True)
    event.listen(
        read_only.sync_engine, "begin", lambda c: c.exec_driver_sql("SET TRANSACTION READ ONLY")
    )
    return engine, read_only


def create_app() -> Quart:
    app = Quart(__name__)
    read_write, read_only = engines(async_database_url(), engine_options())
    app.extensions[EXTENSION_KEY] = (
        async_sessionmaker(read_write, expire_on_commit=False),
        async_sessionmaker(read_only, expire_on_commit=False),
    )

    @app.after_serving
    async def close_connections() -> None:
        await read_write.dispose()  # async connections belong to the serving loop

    _quart.register(app)
    app.add_url_rule(f"/customers/<{shapes.ID}:customer_id>", view_func=get_customer)
    app.add_url_rule(f"/accounts/<{shapes.ID}:account_id>/transfers", view_func=account_transfers)
    app.add_url_rule("/transfers", view_func=create_transfer, methods=["POST"])
    return app


def writes() -> async_sessionmaker[AsyncSession]:
    return current_app.extensions[EXTENSION_KEY][0]  # type: ignore[no-any-return]


def reads() -> async_sessionmaker[AsyncSession]:
    return current_app.extensions[EXTENSION_KEY][1]  # type: ignore[no-any-return]


async def _locked_account(session: AsyncSession, account_id: int) -> Account | None:
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def get_customer(customer_id: int) -> ResponseReturnValue:
    stmt = (
        select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.account))
    )
    async with reads().begin() as session:
        customer = (await session.scalars(stmt)).one_or_none()
        if customer is None:
            raise NotFound("customer", customer_id)
        return shapes.customer(customer)


async def account_transfers(account_id: int) -> ResponseReturnValue:
    stmt = (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )
    async with reads().begin() as session:
        if await session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
        return {"items": [shapes.transfer(t) for t in await session.scalars(stmt)]}


async def create_transfer() -> ResponseReturnValue:
    data = schemas.new_transfer(schemas.json_object(await _quart.request_body()))
    if data.from_account == data.to_account:
        raise SameAccount(data.from_account)
    async with writes().begin() as session:
        # Lock both rows in ascending id order, as the ledger does.
        ids = sorted((data.from_account, data.to_account))
        locked = {i: await _locked_account(session, i) for i in ids}
        source, target = locked[data.from_account], locked[data.to_account]
        if source is None:
            raise NotFound("account", data.from_account)
        if target is None:
            raise NotFound("account", data.to_account)
        if source.balance < data.amount:
            raise InsufficientFunds(source.id, source.balance, data.amount)
        if target.balance > MAX_CENTS - data.amount:
            raise BalanceLimitExceeded(target.id)
        source.balance -= data.amount
        target.balance += data.amount
        transfer = Transfer(from_account_id=source.id, to_account_id=target.id, amount=data.amount)
        session.add(transfer)
        await session.flush()
        body = shapes.transfer(transfer)
    notifications.transfer_completed(
        body["id"], body["from_account"], body["to_account"], body["amount"]
    )
    return body, 201
