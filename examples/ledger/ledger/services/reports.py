"""Read-only reports: an account's statement and totals across the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from ..adapter import DBAdapter
from ..database import db
from .errors import NotFound
from .transfers import TransferDetails

adapter = DBAdapter()


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Counts and the sum of all balances, read in one transaction."""

    customers: int
    accounts: int
    transfers: int
    total_balance: int


@db.transactional(read_only=True)
def account_statement(account_id: int) -> list[TransferDetails]:
    """Every transfer into or out of the account, newest first; :class:`NotFound` if unknown."""
    if adapter.get_account(account_id) is None:
        raise NotFound("account", account_id)
    return [TransferDetails.of(t) for t in adapter.transfers_of_account(account_id)]


@db.transactional(read_only=True)
def ledger_totals() -> LedgerTotals:
    """Money is only ever moved, so ``total_balance`` equals the sum of all deposits."""
    return LedgerTotals(
        customers=adapter.count_customers(),
        accounts=adapter.count_accounts(),
        transfers=adapter.count_transfers(),
        total_balance=adapter.total_balance(),
    )
