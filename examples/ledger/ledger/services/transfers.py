"""Transfers: move money between two accounts, at most once per ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from ..adapter import DBAdapter
from ..database import db
from ..models import MAX_CENTS, Account, Transfer
from . import notifications, rules
from .errors import (
    BalanceLimitExceeded,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    SameAccount,
)

IDEMPOTENCY_SCOPE = "transfers"
"""Keys are unique per scope; transfers are the only idempotent operation so far."""

adapter = DBAdapter()


@dataclass(frozen=True, slots=True)
class TransferDetails:
    """A transfer as the outside world sees it."""

    id: int
    from_account: int
    to_account: int
    amount: int

    @classmethod
    def of(cls, transfer: Transfer) -> TransferDetails:
        return cls(
            id=transfer.id,
            from_account=transfer.from_account_id,
            to_account=transfer.to_account_id,
            amount=transfer.amount,
        )


@dataclass(frozen=True, slots=True)
class TransferResult:
    """The transfer, and whether it was made by an earlier request with the same key."""

    transfer: TransferDetails
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Fingerprint:
    key_hash: str
    request_hash: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def transfer(
    from_account: int, to_account: int, amount: int, *, idempotency_key: str | None = None
) -> TransferResult:
    """Move ``amount`` cents from one account to the other, in one unit of work.

    Raises :class:`SameAccount`, :class:`NotFound`, :class:`InsufficientFunds` or
    :class:`BalanceLimitExceeded`; in each case nothing was written.

    With ``idempotency_key``, the first call with that key makes the transfer and records the
    key with a hash of the request, in the same transaction; later calls with the same request
    return that transfer with ``replayed=True`` and change nothing, and calls with another
    request raise :class:`IdempotencyConflict`. Two calls racing with one key are settled by
    the key's unique constraint: the loser's unit rolls back and it replays the winner.

    A ``transfer.completed`` message is written with the transfer, and only for a new transfer:
    it is delivered after the commit (see :func:`_announce`).

    Units: this function is not decorated. It runs :func:`_transfer`, one read-write unit
    retried on transient errors, and, when that unit lost a race for the key and rolled back,
    :func:`_replay` in a new read-only unit. A single unit could not do both: after the unique
    constraint refused the key, its transaction can only roll back.
    """
    rules.identifier(from_account, "from_account")
    rules.identifier(to_account, "to_account")
    rules.amount(amount)
    if from_account == to_account:
        raise SameAccount(from_account)
    if idempotency_key is None:
        return _transfer(from_account, to_account, amount, None)

    fingerprint = _Fingerprint(
        key_hash=_sha256(idempotency_key),
        request_hash=_sha256(f"{from_account}:{to_account}:{amount}"),
    )
    joined = db.current is not None
    try:
        return _transfer(from_account, to_account, amount, fingerprint)
    except IntegrityError:
        if joined:
            # The caller's transaction is unusable now; only the caller can start over.
            raise
        replay = _replay(fingerprint)
        if replay is None:
            raise
        return replay


@db.transactional(retries=3)  # the read-write unit: commits the transfer with its key
def _transfer(
    from_account: int, to_account: int, amount: int, fingerprint: _Fingerprint | None
) -> TransferResult:
    if fingerprint is not None:
        earlier = _earlier_result(fingerprint)
        if earlier is not None:
            return earlier

    # Lock both rows in ascending id order. Every transfer does the same, so two transfers
    # between the same accounts in opposite directions queue up instead of deadlocking.
    locked: dict[int, Account | None] = {
        account_id: adapter.lock_account(account_id)
        for account_id in sorted((from_account, to_account))
    }
    source, target = locked[from_account], locked[to_account]
    if source is None:
        raise NotFound("account", from_account)
    if target is None:
        raise NotFound("account", to_account)
    if source.balance < amount:
        raise InsufficientFunds(source.id, source.balance, amount)
    if target.balance > MAX_CENTS - amount:
        raise BalanceLimitExceeded(target.id)

    source.balance -= amount
    target.balance += amount
    row = adapter.add_transfer(source.id, target.id, amount)
    if fingerprint is not None:
        adapter.add_idempotency_key(
            IDEMPOTENCY_SCOPE, fingerprint.key_hash, fingerprint.request_hash, row.id
        )
    details = TransferDetails.of(row)
    _announce(details)
    return TransferResult(details, replayed=False)


def _announce(transfer: TransferDetails) -> None:
    """Enqueue ``transfer.completed`` in the transfer's own transaction: the outbox.

    No SQL is sent now: the message is INSERTed into ``flask_uow_outbox`` just before the
    outermost unit COMMITs, so it exists exactly when the transfer does, and is rolled back
    with it otherwise (a refused transfer, an enclosing unit that rolls back, a retried
    attempt). After COMMIT it is delivered to ``notifications.deliver_transfer_completed``,
    in this process or by a Celery worker (``ledger.delivery``), and delivered again later
    if this process dies first.
    """
    db.enqueue(
        notifications.TRANSFER_COMPLETED,
        transfer.id,
        transfer.from_account,
        transfer.to_account,
        transfer.amount,
    )


@db.transactional(read_only=True)  # a fresh unit, after _transfer's unit rolled back
def _replay(fingerprint: _Fingerprint) -> TransferResult | None:
    return _earlier_result(fingerprint)


def _earlier_result(fingerprint: _Fingerprint) -> TransferResult | None:
    record = adapter.find_idempotency_key(IDEMPOTENCY_SCOPE, fingerprint.key_hash)
    if record is None:
        return None
    if record.request_hash != fingerprint.request_hash:
        raise IdempotencyConflict()
    earlier = adapter.get_transfer(record.transfer_id)
    assert earlier is not None  # a foreign key guarantees it
    return TransferResult(TransferDetails.of(earlier), replayed=True)
