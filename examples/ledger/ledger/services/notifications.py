"""Notifications to customers, kept in a bounded in-memory record that tests can inspect.

A real ledger would send an email here. What matters for the example is *when* it is sent:

- ``transfer.completed`` travels through flask-uow's transactional outbox. The transfer's unit
  enqueues :data:`TRANSFER_COMPLETED` (``db.enqueue``), which is written in the transfer's own
  transaction; after COMMIT the message is delivered, in this process or by a Celery worker
  (``ledger.delivery``), to :func:`deliver_transfer_completed`, which records the delivery in
  ``notification_deliveries`` (``GET /transfers/<id>/notifications``) and then sends it.
- ``customer.registered`` is sent by an in-memory ``uow.on_commit`` hook: after COMMIT, never
  for a unit that rolled back, but lost if the process dies in between.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

from ..adapter import DBAdapter
from ..database import db
from .errors import NotFound

logger = logging.getLogger(__name__)
adapter = DBAdapter()

TRANSFER_COMPLETED = "ledger.transfer_completed"
"""The outbox task name of ``transfer.completed``: what the transfer service enqueues, and
what both the in-process delivery and the Celery worker run (:func:`deliver_transfer_completed`)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message: what happened (``kind``) and the plain values describing it."""

    kind: str
    payload: Mapping[str, object] = field(default_factory=dict)


MAX_SIZE = 10_000
"""How many notifications the process-wide outbox keeps: the newest ones."""


class Outbox:
    """A thread-safe record of sent notifications, bounded to the newest ``max_size``.

    When it is full, sending a notification discards the oldest one: it counts in
    :attr:`dropped`, and the first drop since the last :meth:`clear` logs a warning. Sending
    never fails and never waits for room, because it runs in ``on_commit`` hooks, after the
    COMMIT: raising there cannot undo the transfer (flask-uow would only log the error), and
    waiting would hold up the request that committed. In a real ledger a notification would be
    delivered by then, so only the record of it is lost, never the money or the notification.
    """

    def __init__(self, max_size: int = MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError(f"an outbox needs room for at least 1 notification, not {max_size}")
        self.max_size = max_size
        """The number of notifications kept; older ones are discarded."""
        self._lock = threading.Lock()
        self._sent: deque[Notification] = deque(maxlen=max_size)
        self._dropped = 0

    def send(self, kind: str, **payload: object) -> Notification:
        """Record a notification and log it at INFO level; discard the oldest if full."""
        notification = Notification(kind, MappingProxyType(dict(payload)))
        with self._lock:
            full = len(self._sent) == self.max_size
            self._sent.append(notification)
            if full:
                self._dropped += 1
            first_drop = full and self._dropped == 1
        logger.info("notification %s %s", kind, dict(payload))
        if first_drop:
            logger.warning(
                "the outbox is full (%d notifications): the oldest are being discarded",
                self.max_size,
            )
        return notification

    def sent(self, kind: str | None = None) -> list[Notification]:
        """A copy of the notifications kept, oldest first, optionally of one kind."""
        with self._lock:
            return [n for n in self._sent if kind is None or n.kind == kind]

    @property
    def dropped(self) -> int:
        """How many notifications were discarded to make room since the last ``clear()``."""
        with self._lock:
            return self._dropped

    def clear(self) -> None:
        """Forget every notification and the count of dropped ones (tests call this)."""
        with self._lock:
            self._sent.clear()
            self._dropped = 0


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


@dataclass(frozen=True, slots=True)
class DeliveryDetails:
    """A notification delivered about a transfer, and who delivered it."""

    kind: str
    delivered_by: str


@db.transactional
def deliver_transfer_completed(
    transfer_id: int,
    from_account: int,
    to_account: int,
    amount: int,
    *,
    delivered_by: str = "in-process",
) -> bool:
    """Consume one ``transfer.completed`` message; False if it was delivered before.

    Runs in the unit of whoever delivers it (the outbox's in-process delivery, or a Celery
    ``UnitTask``): INSERTs the ``notification_deliveries`` row, and sends the notification
    after that unit COMMITs. The row's unique (transfer_id, kind) makes a message delivered
    twice (a crash after delivering, before the outbox row was marked) a no-op, and two
    copies running at once meet on it: the second unit fails on INSERT, rolls back, and its
    retry finds the row.
    """
    kind = "transfer.completed"
    if adapter.find_delivery(transfer_id, kind) is not None:
        return False
    adapter.add_delivery(transfer_id, kind, delivered_by)
    db.on_commit(partial(transfer_completed, transfer_id, from_account, to_account, amount))
    return True


@db.transactional(read_only=True)
def deliveries_of_transfer(transfer_id: int) -> list[DeliveryDetails]:
    """The notifications delivered about a transfer; :class:`NotFound` if it does not exist."""
    if adapter.get_transfer(transfer_id) is None:
        raise NotFound("transfer", transfer_id)
    return [
        DeliveryDetails(row.kind, row.delivered_by)
        for row in adapter.deliveries_of_transfer(transfer_id)
    ]
