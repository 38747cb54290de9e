"""The ledger's hot endpoints on Quart with flask-uow: async services, each one async unit.

An async twin of the ledger, not a copy: the services are written as the ledger's are
(``@db.transactional`` units, read-only for reads, ``retries=3`` and an ``on_commit``
notification for a transfer), on the ledger's models, request parsing and JSON shapes, and
send the same SQL as every other app of ``benchmarks.peers``. ``db.init_app`` gives the
Quart app an async engine with a pool (``UOW_ENGINE_OPTIONS``), on the async driver flask-uow
derives from ``UOW_DATABASE_URL``; no per-request unit (``UOW_PER_REQUEST`` is off, as in the
ledger).

Served by hypercorn as ``'benchmarks.peers.quart_uow_app:create_app()'``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from quart import Quart
from quart.typing import ResponseReturnValue
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from flask_uow import Database
from ledger import notifications, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Base, Customer, Transfer

from . import _quart, shapes
from .settings import database_url, engine_options

db = Database(metadata=Base.metadata)


def create_app() -> Quart:
    app = Quart(__name__)
    app.config.update(
        UOW_DATABASE_URL=database_url(),
        UOW_ENGINE_OPTIONS=engine_options(),
        UOW_PER_REQUEST=False,
    )
    db.init_app(app)
    _quart.register(app)
    app.add_url_rule(f"/customers/<{shapes.ID}:customer_id>", view_func=get_customer)
    app.add_url_rule(f"/accounts/<{shapes.ID}:account_id>/transfers", view_func=account_transfers)
    app.add_url_rule("/transfers", view_func=create_transfer, methods=["POST"])
    return app


# -- the services ------------------------------------------------------------------------------


@db.transactional(read_only=True)
async def customer_details(customer_id: int) -> dict[str, Any]:
    stmt = (
        select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.account))
    )
    customer = (await db.async_session.scalars(stmt)).one_or_none()
    if customer is None:
        raise NotFound("customer", customer_id)
    return shapes.customer(customer)


@db.transactional(read_only=True)
async def account_statement(account_id: int) -> list[dict[str, Any]]:
    session = db.async_session
    if await session.get(Account, account_id) is None:
        raise NotFound("account", account_id)
    stmt = (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )
    return [shapes.transfer(t) for t in await session.scalars(stmt)]


async def _locked_account(account_id: int) -> Account | None:
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await db.async_session.scalars(stmt)).one_or_none()


@db.transactional(retries=3)
async def transfer(from_account: int, to_account: int, amount: int) -> dict[str, Any]:
    # Lock both rows in ascending id order, as the ledger does.
    locked = {i: await _locked_account(i) for i in sorted((from_account, to_account))}
    source, target = locked[from_account], locked[to_account]
    if source is None:
        raise NotFound("account", from_account)
    if target is None:
        raise NotFound("account", to_account)
    if source.balance < amount:
        raise InsufficientFunds(source.id, source.balance, amount)
    if target.balance > MAX_CENTS - amount:
        raise BalanceLimitExceeded(target.id)
    source.balance -= amount
    target.balance += amount
    row = Transfer(from_account_id=source.id, to_account_id=target.id, amount=amount)
    db.async_session.add(row)
    await db.async_session.flush()
    body = shapes.transfer(row)
    db.on_commit(
        partial(
            notifications.transfer_completed,
            body["id"],
            body["from_account"],
            body["to_account"],
            body["amount"],
        )
    )
    return body


# -- the views -------------------------------------------------------------------------------


async def get_customer(customer_id: int) -> ResponseReturnValue:
    return await customer_details(customer_id)


async def account_transfers(account_id: int) -> ResponseReturnValue:
    return {"items": await account_statement(account_id)}


async def create_transfer() -> ResponseReturnValue:
    data = schemas.new_transfer(schemas.json_object(await _quart.request_body()))
    if data.from_account == data.to_account:
        raise SameAccount(data.from_account)
    return await transfer(data.from_account, data.to_account, data.amount), 201
