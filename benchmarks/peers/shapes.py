"""The ledger's JSON shapes, built straight from ORM objects (the twins have no service layer)."""

from __future__ import annotations

from typing import Any

from ledger.models import Account, Customer, Transfer
from ledger.views import ID as ID  # the ledger's id converter: every app routes the same way


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
