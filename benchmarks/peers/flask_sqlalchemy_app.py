"""The ledger's hot endpoints the Flask-SQLAlchemy way: ``db.session``, ``commit()`` in the view.

Flask-SQLAlchemy removes the session when the app context ends, which rolls back whatever was
not committed (a raised error, or a read). Responses are built before ``commit()``, as the
ledger builds them inside its unit of work, so that both send the same SQL; code that reads
attributes after ``commit()`` would send one more SELECT per object (``expire_on_commit``).
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from ledger import errorhandlers, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Base, Customer, Transfer

from . import shapes
from .settings import HOLD_SECONDS, database_url, engine_options

db = SQLAlchemy(metadata=Base.metadata)
api = Blueprint("api", __name__)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url(),
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    db.init_app(app)
    errorhandlers.register(app)
    app.register_blueprint(api)
    return app


def _locked_account(account_id: int) -> Account | None:
    stmt = (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.scalars(stmt).one_or_none()


@api.get(f"/customers/<{shapes.ID}:customer_id>")
def get_customer(customer_id: int) -> ResponseReturnValue:
    stmt = (
        select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.account))
    )
    customer = db.session.scalars(stmt).one_or_none()
    if customer is None:
        raise NotFound("customer", customer_id)
    return shapes.customer(customer)


@api.get(f"/accounts/<{shapes.ID}:account_id>/transfers")
def account_transfers(account_id: int) -> ResponseReturnValue:
    if db.session.get(Account, account_id) is None:
        raise NotFound("account", account_id)
    stmt = (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )
    return {"items": [shapes.transfer(t) for t in db.session.scalars(stmt)]}


@api.post("/transfers")
def create_transfer() -> ResponseReturnValue:
    data = schemas.new_transfer(schemas.json_object(request.get_data(cache=False)))
    if data.from_account == data.to_account:
        raise SameAccount(data.from_account)
    # Lock both rows in ascending id order, as the ledger does, so that transfers queue up
    # instead of deadlocking.
    locked = {i: _locked_account(i) for i in sorted((data.from_account, data.to_account))}
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
    db.session.add(transfer)
    db.session.flush()
    body = shapes.transfer(transfer)
    db.session.commit()
    return body, 201


@api.get("/bench/noop")
def noop() -> ResponseReturnValue:
    return {"ok": True}


@api.post(f"/bench/hold/<{shapes.ID}:account_id>")
def hold(account_id: int) -> ResponseReturnValue:
    """Read, wait on an external service, write: one session (and transaction) throughout."""
    if db.session.get(Account, account_id) is None:
        raise NotFound("account", account_id)
    time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
    account = _locked_account(account_id)
    assert account is not None
    account.balance += 1
    db.session.flush()
    body = shapes.account_balance(account)
    db.session.commit()
    return body
