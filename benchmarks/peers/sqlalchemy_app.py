"""The ledger's hot endpoints with bare SQLAlchemy: each view opens its ``Session`` by hand.

Reads use ``with sessions() as session:`` (closing it rolls back); writes use
``with sessions.begin() as session:`` (commits at the end of the block, rolls back on error).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ledger import errorhandlers, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Customer, Transfer

from . import shapes
from .settings import HOLD_SECONDS, database_url, engine_options

EXTENSION_KEY = "bench-sessionmaker"
api = Blueprint("api", __name__)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    engine = sa.create_engine(database_url(), **engine_options())
    app.extensions[EXTENSION_KEY] = sessionmaker(engine)
    errorhandlers.register(app)
    app.register_blueprint(api)
    return app


def sessions() -> sessionmaker[Session]:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _locked_account(session: Session, account_id: int) -> Account | None:
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()


@api.get(f"/customers/<{shapes.ID}:customer_id>")
def get_customer(customer_id: int) -> ResponseReturnValue:
    stmt = (
        select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.account))
    )
    with sessions()() as session:
        customer = session.scalars(stmt).one_or_none()
        if customer is None:
            raise NotFound("customer", customer_id)
        return shapes.customer(customer)


@api.get(f"/accounts/<{shapes.ID}:account_id>/transfers")
def account_transfers(account_id: int) -> ResponseReturnValue:
    stmt = (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )
    with sessions()() as session:
        if session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
        return {"items": [shapes.transfer(t) for t in session.scalars(stmt)]}


@api.post("/transfers")
def create_transfer() -> ResponseReturnValue:
    data = schemas.new_transfer(schemas.json_object(request.get_data(cache=False)))
    if data.from_account == data.to_account:
        raise SameAccount(data.from_account)
    with sessions().begin() as session:
        # Lock both rows in ascending id order, as the ledger does.
        ids = sorted((data.from_account, data.to_account))
        locked = {i: _locked_account(session, i) for i in ids}
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
        session.flush()
        body = shapes.transfer(transfer)
    return body, 201


@api.get("/bench/noop")
def noop() -> ResponseReturnValue:
    return {"ok": True}


@api.post(f"/bench/hold/<{shapes.ID}:account_id>")
def hold(account_id: int) -> ResponseReturnValue:
    """Read, wait on an external service, write: one session per request, as in the other
    views, so the transaction the read began stays open during the wait."""
    with sessions().begin() as session:
        if session.get(Account, account_id) is None:
            raise NotFound("account", account_id)
        time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
        account = _locked_account(session, account_id)
        assert account is not None
        account.balance += 1
        session.flush()
        body = shapes.account_balance(account)
    return body
