"""The ledger's endpoints written once for every peer of flask-uow: statements, a transfer's
checks and the JSON shapes (shared with ``quart_apps``), and the Flask blueprint.

A view opens its transaction with ``reads()`` or ``writes()``, context managers yielding a Session
that is committed when the block ends normally and rolled back when it raises: bare SQLAlchemy's
``sessionmaker.begin`` on a read-only and a read-write engine, or :func:`request_session`.
Responses are built before the commit, as the ledger builds them inside its unit, so every app
sends the same SQL in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from types import SimpleNamespace
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session, selectinload

from ledger.http import schemas
from ledger.http.body import json_object
from ledger.models import MAX_CENTS, Account, Customer, Transfer
from ledger.services import notifications
from ledger.services.errors import BalanceLimitExceeded, InsufficientFunds, NotFound, SameAccount
from ledger.views import ID  # the ledger's id converter: every app routes the same way

from .settings import HOLD_SECONDS

Transaction = Callable[[], AbstractContextManager[Session]]


class _CommitAtEnd:
    __slots__ = ("get", "session")

    def __init__(self, get: Callable[[], Session]) -> None:
        self.get = get

    def __enter__(self) -> Session:
        self.session = self.get()
        return self.session

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        if kind is None:
            self.session.commit()


def request_session(get: Callable[[], Session]) -> Transaction:
    """``with request_session(get)() as session:``: the request's session from ``get()``,
    committed when the block ends normally; the extension closes it with the app context."""
    return partial(_CommitAtEnd, get)


def account_balance(account: Account) -> dict[str, Any]:
    return {"id": account.id, "balance": account.balance}


def customer(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "account": account_balance(customer.account),
    }


def transfer(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.id,
        "from_account": transfer.from_account_id,
        "to_account": transfer.to_account_id,
        "amount": transfer.amount,
    }


def customer_query(customer_id: int) -> Select[Any]:
    stmt = select(Customer).where(Customer.id == customer_id)
    return stmt.options(selectinload(Customer.account))


def transfers_query(account_id: int) -> Select[Any]:
    return (
        select(Transfer)
        .where(or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id))
        .order_by(Transfer.id.desc())
    )


def lock_query(account_id: int) -> Select[Any]:
    """``SELECT ... FOR UPDATE`` of one account, refreshing the row if the session has it."""
    return (
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def move(data: SimpleNamespace, locked: dict[int, Account | None]) -> Transfer:
    """Check a transfer as the ledger does, move the money between the rows ``locked`` (both
    locked, in ascending id order) and return the new transfer row, to add and flush."""
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
    return Transfer(from_account_id=source.id, to_account_id=target.id, amount=data.amount)


def blueprint(reads: Transaction, writes: Transaction) -> Blueprint:
    api = Blueprint("api", __name__)

    @api.get(f"/customers/<{ID}:customer_id>")
    def get_customer(customer_id: int) -> ResponseReturnValue:
        with reads() as session:
            found = session.scalars(customer_query(customer_id)).one_or_none()
            if found is None:
                raise NotFound("customer", customer_id)
            return customer(found)

    @api.get(f"/accounts/<{ID}:account_id>/transfers")
    def account_transfers(account_id: int) -> ResponseReturnValue:
        with reads() as session:
            if session.get(Account, account_id) is None:
                raise NotFound("account", account_id)
            return {"items": [transfer(t) for t in session.scalars(transfers_query(account_id))]}

    @api.post("/transfers")
    def create_transfer() -> ResponseReturnValue:
        data = schemas.NEW_TRANSFER.parse(json_object(request.get_data(cache=False)))
        if data.from_account == data.to_account:
            raise SameAccount(data.from_account)
        with writes() as session:
            # Lock both rows in ascending id order, as the ledger does.
            ids = sorted((data.from_account, data.to_account))
            row = move(data, {i: session.scalars(lock_query(i)).one_or_none() for i in ids})
            session.add(row)
            session.flush()
            body = transfer(row)
        notifications.transfer_completed(
            body["id"], body["from_account"], body["to_account"], body["amount"]
        )
        return body, 201

    @api.get("/bench/noop")
    def noop() -> ResponseReturnValue:
        return {"ok": True}

    def deposit_cent(session: Session, account_id: int) -> dict[str, Any]:
        account = session.scalars(lock_query(account_id)).one_or_none()
        if account is None:
            raise NotFound("account", account_id)
        account.balance += 1
        session.flush()
        return account_balance(account)

    @api.post(f"/bench/hold/<{ID}:account_id>")
    def hold(account_id: int) -> ResponseReturnValue:
        """Read, wait on an external service, write: one transaction held across the wait."""
        with writes() as session:
            if session.get(Account, account_id) is None:
                raise NotFound("account", account_id)
            time.sleep(HOLD_SECONDS)  # e.g. a fraud check over HTTP
            return deposit_cent(session, account_id)

    @api.post(f"/bench/hold-short/<{ID}:account_id>")
    def hold_short(account_id: int) -> ResponseReturnValue:
        """Short transactions around the external call, as the ledger's services are written:
        a read-only one to read, nothing open during the wait, a read-write one to deposit."""
        with reads() as session:
            if session.get(Account, account_id) is None:
                raise NotFound("account", account_id)
        time.sleep(HOLD_SECONDS)
        with writes() as session:
            return deposit_cent(session, account_id)

    return api
