"""The ledger's hot endpoints for the Flask extensions that hand out one session per app context.

Flask-SQLAlchemy, Flask-SQLAlchemy-Lite and Advanced Alchemy's Flask extension all give a view
a session for the request and close it when the app context ends (rolling back whatever was
not committed); the view commits. Only how the view gets the session differs, so the views
are written once here, against a ``session()`` function.

Responses are built before ``commit()``, as the ledger builds them inside its unit of work,
so that every app sends the same SQL, and a transfer sends the same notification after
COMMIT as the ledger's ``on_commit`` hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from ledger import notifications, schemas
from ledger.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.models import MAX_CENTS, Account, Customer, Transfer

from . import shapes
from .settings import HOLD_SECONDS


def blueprint(session: Callable[[], Session]) -> Blueprint:
    """The endpoints, reading the request's session with ``session()``."""
    api = Blueprint("api", __name__)

    def locked_account(account_id: int) -> Account | None:
        stmt = (
            select(Account)
            .where(Account.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return session().scalars(stmt).one_or_none()

    @api.get(f"/customers/<{shapes.ID}:customer_id>")
    def get_customer(customer_id: int) -> ResponseReturnValue:
        stmt = (
            select(Customer)
            .where(Customer.id == customer_id)
            .options(selectinload(Customer.account))
        )
        customer = session().scalars(stmt).one_or_none()
        if customer is None:
            raise NotFound("customer", customer_id)
        body = shapes.customer(customer)
        session().commit()
        return body

    @api.get(f"/accounts/<{shapes.ID}:account_id>/transfers")
    def account_transfers(account_id: int) -> ResponseReturnValue:
        if session().get(Account, account_id) is None:
            raise NotFound("account", account_id)
        stmt = (
            select(Transfer)
            .where(
                or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id)
            )
            .order_by(Transfer.id.desc())
        )
        body = {"items": [shapes.transfer(t) for t in session().scalars(stmt)]}
        session().commit()
        return body

    @api.post("/transfers")
    def create_transfer() -> ResponseReturnValue:
        data = schemas.new_transfer(schemas.json_object(request.get_data(cache=False)))
        if data.from_account == data.to_account:
            raise SameAccount(data.from_account)
        # Lock both rows in ascending id order, as the ledger does, so that transfers queue
        # up instead of deadlocking.
        locked = {i: locked_account(i) for i in sorted((data.from_account, data.to_account))}
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
        session().add(transfer)
        session().flush()
        body = shapes.transfer(transfer)
        session().commit()
        notifications.transfer_completed(
            body["id"], body["from_account"], body["to_account"], body["amount"]
        )
        return body, 201

    @api.get("/bench/noop")
    def noop() -> ResponseReturnValue:
        return {"ok": True}

    @api.post(f"/bench/hold/<{shapes.ID}:account_id>")
    def hold(account_id: int) -> ResponseReturnValue:
        """Read, wait on an external service, write: one transaction throughout."""
        if session().get(Account, account_id) is None:
            raise NotFound("account", account_id)
        time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
        account = locked_account(account_id)
        assert account is not None
        account.balance += 1
        session().flush()
        body = shapes.account_balance(account)
        session().commit()
        return body

    return api
