"""The ``models`` and ``adapter`` fixtures of the doc examples: customers with accounts."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from flask_uow import Database, Model


class Base(Model, DeclarativeBase):
    pass


class Customer(Base):
    """Table ``customer``; names are unique, so a second "Ada" raises IntegrityError."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    accounts: Mapped[list[Account]] = relationship(back_populates="customer")


class Account(Base):
    """Table ``account``: a balance that may not go below zero."""

    __table_args__ = (sa.CheckConstraint("balance >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    balance: Mapped[int] = mapped_column(default=0)
    closed: Mapped[bool] = mapped_column(default=False)
    customer: Mapped[Customer | None] = relationship(back_populates="accounts")


class Adapter:
    """Every query of the examples; it reads ``db.session`` and never commits."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_customer(self, name: str) -> Customer:
        customer = Customer(name=name)
        self.db.session.add(customer)
        return customer

    def open_account(self, balance: int = 0) -> Account:
        account = Account(balance=balance)
        self.db.session.add(account)
        self.db.session.flush()
        return account

    def debit(self, account_id: int, amount: int) -> None:
        self._account(account_id).balance -= amount
        self.db.session.flush()  # the CHECK constraint fails here on overdraft

    def credit(self, account_id: int, amount: int) -> None:
        self._account(account_id).balance += amount

    def close(self, account_id: int) -> None:
        self._account(account_id).closed = True

    def insert(self, name: str) -> None:
        self.db.session.add(Customer(name=name))
        self.db.session.flush()

    def iterate_rows(self) -> Iterator[Customer]:
        yield from self.db.session.scalars(sa.select(Customer).order_by(Customer.id))

    def _account(self, account_id: int) -> Account:
        account = self.db.session.get(Account, account_id)
        if account is None:
            raise LookupError(f"no account {account_id}")
        return account
