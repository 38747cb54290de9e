"""Notifications to customers, kept in an in-memory outbox that tests and the README can inspect.

A real ledger would send an email or publish to a queue here. What matters for the example is
*when* :func:`send` runs: services register it with ``uow.on_commit``, so a notification goes out
only after the database committed, and never for a transfer that failed or was rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message: what happened (``kind``) and the plain values describing it."""

    kind: str
    payload: Mapping[str, object] = field(default_factory=dict)


class Outbox:
    """A thread-safe list of sent notifications."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[Notification] = []

    def send(self, kind: str, **payload: object) -> Notification:
        """Record a notification and log it at INFO level."""
        notification = Notification(kind, MappingProxyType(dict(payload)))
        with self._lock:
            self._sent.append(notification)
        logger.info("notification %s %s", kind, dict(payload))
        return notification

    def sent(self, kind: str | None = None) -> list[Notification]:
        """A copy of the notifications sent so far, oldest first, optionally of one kind."""
        with self._lock:
            return [n for n in self._sent if kind is None or n.kind == kind]

    def clear(self) -> None:
        """Forget every notification (tests call this between cases)."""
        with self._lock:
            self._sent.clear()


outbox = Outbox()
"""The process-wide outbox the services send to."""


def transfer_completed(transfer_id: int, from_account: int, to_account: int, amount: int) -> None:
    """Tell both account holders that money moved. Runs after COMMIT, with plain values only."""
    outbox.send(
        "transfer.completed",
        transfer_id=transfer_id,
        from_account=from_account,
        to_account=to_account,
        amount=amount,
    )


def customer_registered(customer_id: int, email: str) -> None:
    """Welcome a new customer. Runs after COMMIT."""
    outbox.send("customer.registered", customer_id=customer_id, email=email)
