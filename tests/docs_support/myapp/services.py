"""myapp's services: each declares its unit of work."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from flask_uow import Propagation

from . import mail
from .models import Account, Customer, db


class DuplicateEmail(Exception):
    pass


class InsufficientFunds(Exception):
    pass


@db.transactional
def register_customer(email: str) -> None:
    try:
        with db.unit_of_work(propagation=Propagation.NESTED):
            db.session.add(Customer(email=email))
            db.session.flush()
    except IntegrityError:
        raise DuplicateEmail(email) from None
    db.on_commit(lambda: mail.send(f"welcome {email}"))


@db.transactional(read_only=True)
def customer_emails() -> list[str]:
    return list(db.session.scalars(sa.select(Customer.email).order_by(Customer.id)))


@db.transactional
def open_account(balance: int = 0) -> int:
    account = Account(balance=balance)
    db.session.add(account)
    db.session.flush()
    return account.id


@db.transactional
def transfer(src: int, dst: int, amount: int) -> None:
    source = db.session.get_one(Account, src)
    source.balance -= amount
    db.session.get_one(Account, dst).balance += amount
    if source.balance < 0:
        raise InsufficientFunds(f"account {src} has {source.balance + amount}")


@db.transactional(read_only=True)
def balance(account_id: int) -> int:
    return db.session.get_one(Account, account_id).balance
