"""Data access for the ledger: every query lives here, and nothing here commits.

This is the question's ``DBAdapter`` with the session lifecycle taken out. It holds no session
of its own; each method uses ``db.session``, the session of the unit of work in progress, so
whoever declared the unit decides when it commits, rolls back and closes. Calling a method
outside a unit raises :class:`flask_uow.NoActiveUnitOfWork` instead of silently opening a
session nobody will close.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from .database import db
from .models import Account, Customer, IdempotencyKey, NotificationDelivery, Transfer


class DBAdapter:
    """Queries and writes for customers, accounts, transfers and idempotency keys.

    Stateless: one instance may be shared by every thread and every unit of work.
    """

    @property
    def session(self) -> Session:
        """The current unit of work's session."""
        return db.session

    # Customers

    def add_customer(self, name: str, email: str) -> Customer:
        """Insert a customer with an empty account; flushes so both ids are known."""
        customer = Customer(name=name, email=email, account=Account(balance=0))
        self.session.add(customer)
        self.session.flush()
        return customer

    def get_customer(self, customer_id: int) -> Customer | None:
        """The customer with its account loaded, or None."""
        stmt = (
            select(Customer)
            .where(Customer.id == customer_id)
            .options(selectinload(Customer.account))
        )
        return self.session.scalars(stmt).one_or_none()

    def customer_email_exists(self, email: str) -> bool:
        stmt = select(Customer.id).where(Customer.email == email)
        return self.session.scalars(stmt).first() is not None

    def list_customers(self, offset: int, limit: int) -> Sequence[Customer]:
        """One page of customers in id order, accounts loaded."""
        stmt = (
            select(Customer)
            .order_by(Customer.id)
            .offset(offset)
            .limit(limit)
            .options(selectinload(Customer.account))
        )
        return self.session.scalars(stmt).all()

    def count_customers(self) -> int:
        return self.session.scalar(select(func.count()).select_from(Customer)) or 0

    # Accounts

    def get_account(self, account_id: int) -> Account | None:
        return self.session.get(Account, account_id)

    def lock_account(self, account_id: int) -> Account | None:
        """``SELECT ... FOR UPDATE`` one account, refreshing it if the session already had it.

        On PostgreSQL and MariaDB the row stays locked until the unit of work ends. SQLite has
        no row locks and ignores ``FOR UPDATE``; there a read-write unit starts with
        ``BEGIN IMMEDIATE``, which serialises writers instead.
        """
        stmt = (
            select(Account)
            .where(Account.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return self.session.scalars(stmt).one_or_none()

    def count_accounts(self) -> int:
        return self.session.scalar(select(func.count()).select_from(Account)) or 0

    def total_balance(self) -> int:
        return self.session.scalar(select(func.coalesce(func.sum(Account.balance), 0))) or 0

    # Transfers

    def add_transfer(self, from_account_id: int, to_account_id: int, amount: int) -> Transfer:
        """Insert a transfer row; flushes so its id is known. Balances are the caller's job."""
        transfer = Transfer(
            from_account_id=from_account_id, to_account_id=to_account_id, amount=amount
        )
        self.session.add(transfer)
        self.session.flush()
        return transfer

    def get_transfer(self, transfer_id: int) -> Transfer | None:
        return self.session.get(Transfer, transfer_id)

    def transfers_of_account(self, account_id: int) -> Sequence[Transfer]:
        """Every transfer into or out of the account, newest first."""
        stmt = (
            select(Transfer)
            .where(
                or_(Transfer.from_account_id == account_id, Transfer.to_account_id == account_id)
            )
            .order_by(Transfer.id.desc())
        )
        return self.session.scalars(stmt).all()

    def count_transfers(self) -> int:
        return self.session.scalar(select(func.count()).select_from(Transfer)) or 0

    # Notifications delivered

    def find_delivery(self, transfer_id: int, kind: str) -> NotificationDelivery | None:
        stmt = select(NotificationDelivery).where(
            NotificationDelivery.transfer_id == transfer_id, NotificationDelivery.kind == kind
        )
        return self.session.scalars(stmt).one_or_none()

    def add_delivery(self, transfer_id: int, kind: str, delivered_by: str) -> None:
        """Insert a delivery row; flushes, so a concurrent copy fails on the unique key here."""
        self.session.add(
            NotificationDelivery(transfer_id=transfer_id, kind=kind, delivered_by=delivered_by)
        )
        self.session.flush()

    def deliveries_of_transfer(self, transfer_id: int) -> Sequence[NotificationDelivery]:
        stmt = (
            select(NotificationDelivery)
            .where(NotificationDelivery.transfer_id == transfer_id)
            .order_by(NotificationDelivery.kind)
        )
        return self.session.scalars(stmt).all()

    # Idempotency keys

    def find_idempotency_key(self, scope: str, key_hash: str) -> IdempotencyKey | None:
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key_hash == key_hash
        )
        return self.session.scalars(stmt).one_or_none()

    def add_idempotency_key(
        self, scope: str, key_hash: str, request_hash: str, transfer_id: int
    ) -> IdempotencyKey:
        """Insert the key and flush at once, so a concurrent duplicate fails here with
        :class:`sqlalchemy.exc.IntegrityError` rather than at commit time."""
        record = IdempotencyKey(
            scope=scope, key_hash=key_hash, request_hash=request_hash, transfer_id=transfer_id
        )
        self.session.add(record)
        self.session.flush()
        return record

    # Health

    def ping(self) -> None:
        """Run ``SELECT 1``; raises a :class:`sqlalchemy.exc.DBAPIError` if the database is down."""
        self.session.execute(select(1))
