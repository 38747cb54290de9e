"""The ledger's tables: customers, their accounts, transfers between accounts, idempotency keys,
and the notifications delivered about transfers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names spelled out, so that Alembic migrations can name them on every backend."""

MAX_CENTS = 2**63 - 1
"""The largest amount of money a column holds: money is integer cents in a signed 64-bit column."""


class Base(DeclarativeBase):
    """Declarative base of the ledger models; ``Base.metadata`` is what ``db`` creates and drops.

    Every id, primary or foreign key, is an ``int`` mapped to INTEGER: signed 32-bit on every
    backend, so ids run from 1 to 2**31 - 1 (``ledger.services.rules.MAX_ID``). Money is 64-bit.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(Base):
    """A person who owns exactly one account."""

    __tablename__ = "customers"
    __table_args__ = {"mysql_charset": "utf8mb4"}  # any name, even where the server default differs

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    """Stored lower-cased, so uniqueness means the same thing on every backend's collation."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    account: Mapped[Account] = relationship(back_populates="customer")


class Account(Base):
    """A balance in integer cents, never negative."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)

    customer: Mapped[Customer] = relationship(back_populates="account")


class Transfer(Base):
    """An amount moved from one account to another; transfers are never changed once written."""

    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("from_account_id <> to_account_id", name="distinct_accounts"),
        Index("ix_transfers_from_account_id", "from_account_id"),
        Index("ix_transfers_to_account_id", "to_account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    from_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    to_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key``, the request it came with and the transfer it produced.

    The key itself is not stored, only its SHA-256: any string the client picks fits in the column,
    and comparisons are exact even where the default collation ignores case (MariaDB). The unique
    constraint on (scope, key_hash) is what makes two concurrent requests with one key safe: the
    second one to insert fails and replays the first one's result.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key_hash", name="uq_idempotency_keys_scope_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class NotificationDelivery(Base):
    """A notification about a transfer that a consumer delivered: at most one per kind.

    The consumer (``ledger.services.notifications.deliver_transfer_completed``) writes it in
    the unit that delivers, so the unique (transfer_id, kind) makes a redelivered message a
    no-op, whichever way it travelled (run in process, or by a Celery worker).
    """

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("transfer_id", "kind", name="uq_notification_deliveries_transfer_kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id"))
    kind: Mapped[str] = mapped_column(String(64))
    delivered_by: Mapped[str] = mapped_column(String(32))
    """``in-process`` (the app's own outbox delivery) or ``celery`` (a worker)."""
    delivered_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
