"""The Celery tasks a ledger worker runs (``make worker``): one per outbox task name.

Each one is a ``flask_uow.celery.UnitTask``: its body runs in a unit of work of ``db``,
inside the Flask app's context, and the message id is recorded in ``flask_uow_inbox`` in
that same unit, so a message delivered twice has its effect once.
"""

from __future__ import annotations

from celery import shared_task

from flask_uow.celery import UnitTask

from .services import notifications


def _transfer_completed(transfer_id: int, from_account: int, to_account: int, amount: int) -> None:
    notifications.deliver_transfer_completed(
        transfer_id, from_account, to_account, amount, delivered_by="celery"
    )


transfer_completed = shared_task(base=UnitTask, name=notifications.TRANSFER_COMPLETED)(
    _transfer_completed
)
"""``transfer.completed``: record the delivery in ``notification_deliveries``, then send it."""
