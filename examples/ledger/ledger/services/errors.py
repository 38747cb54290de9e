"""Domain errors raised by the services. They know nothing about HTTP:
``ledger.http.errorhandlers`` maps each one to a status code and a JSON body."""

from __future__ import annotations

from typing import ClassVar


class LedgerError(Exception):
    """Base class of every error a client can cause; ``code`` is a short machine-readable name."""

    code: ClassVar[str] = "ledger_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """A sentence for a person, safe to show to the client."""


class ValidationError(LedgerError):
    """Input does not have the right shape, type or range."""

    code = "validation_error"


class NotFound(LedgerError):
    """A customer or account with this id does not exist."""

    code = "not_found"

    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} does not exist")
        self.kind = kind
        self.ident = ident


class DuplicateEmail(LedgerError):
    """Another customer already registered this email address."""

    code = "duplicate_email"

    def __init__(self, email: str) -> None:
        super().__init__(f"a customer with email {email!r} already exists")
        self.email = email


class InsufficientFunds(LedgerError):
    """The source account's balance is lower than the amount to move."""

    code = "insufficient_funds"

    def __init__(self, account_id: int, balance: int, amount: int) -> None:
        super().__init__(
            f"account {account_id} has a balance of {balance} cents, less than {amount} cents"
        )
        self.account_id = account_id
        self.balance = balance
        self.amount = amount


class SameAccount(LedgerError):
    """A transfer names one account as both source and destination."""

    code = "same_account"

    def __init__(self, account_id: int) -> None:
        super().__init__(f"cannot transfer from account {account_id} to itself")
        self.account_id = account_id


class BalanceLimitExceeded(LedgerError):
    """Crediting the account would take its balance past what a 64-bit cents column holds."""

    code = "balance_limit_exceeded"

    def __init__(self, account_id: int) -> None:
        super().__init__(f"crediting account {account_id} would exceed the maximum balance")
        self.account_id = account_id


class IdempotencyConflict(LedgerError):
    """An ``Idempotency-Key`` was used before with a different request."""

    code = "idempotency_conflict"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used with a different request")
