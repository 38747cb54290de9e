"""Accounts: read one, deposit money into one."""

from __future__ import annotations

from dataclasses import dataclass

from ..adapter import DBAdapter
from ..database import db
from ..models import MAX_CENTS, Account
from . import rules
from .errors import BalanceLimitExceeded, NotFound

adapter = DBAdapter()


@dataclass(frozen=True, slots=True)
class AccountDetails:
    """An account as the outside world sees it; safe to use after the unit of work ended."""

    id: int
    customer_id: int
    balance: int

    @classmethod
    def of(cls, account: Account) -> AccountDetails:
        return cls(id=account.id, customer_id=account.customer_id, balance=account.balance)


@db.transactional(read_only=True)
def get_account(account_id: int) -> AccountDetails:
    """The account, or :class:`NotFound`."""
    account = adapter.get_account(account_id)
    if account is None:
        raise NotFound("account", account_id)
    return AccountDetails.of(account)


@db.transactional(retries=3)
def deposit(account_id: int, amount: int) -> AccountDetails:
    """Add ``amount`` cents to the account and return its new balance.

    The account row is locked for the rest of the unit, so concurrent deposits and transfers
    touching it queue up instead of overwriting each other's balance.
    """
    rules.amount(amount)
    account = adapter.lock_account(account_id)
    if account is None:
        raise NotFound("account", account_id)
    if account.balance > MAX_CENTS - amount:
        raise BalanceLimitExceeded(account_id)
    account.balance += amount
    return AccountDetails.of(account)
