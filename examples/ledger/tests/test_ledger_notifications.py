"""Notifications go out after COMMIT (transfers through the outbox, customers through an
``on_commit`` hook), and never otherwise."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from ledger.database import db
from ledger.services import accounts, customers, transfers
from ledger.services.notifications import MAX_SIZE, Outbox, outbox
from ledger.testing import LedgerClient


def test_a_committed_transfer_sends_one_notification(api: LedgerClient) -> None:
    alice, bob = api.open_account(500), api.open_account()

    transfer = api.transfer(alice, bob, 200)

    sent = outbox.sent("transfer.completed")
    assert len(sent) == 1
    assert dict(sent[0].payload) == {
        "transfer_id": transfer["id"],
        "from_account": alice,
        "to_account": bob,
        "amount": 200,
    }


def test_a_refused_transfer_sends_no_notification(api: LedgerClient) -> None:
    alice, bob = api.open_account(100), api.open_account()

    response = api.post("/transfers", {"from_account": alice, "to_account": bob, "amount": 500})

    assert response.status_code == 409
    assert outbox.sent("transfer.completed") == []


def test_registering_a_customer_sends_a_welcome_notification(api: LedgerClient) -> None:
    customer = api.create_customer("Ada", "ada@example.com")

    sent = outbox.sent("customer.registered")
    assert [dict(n.payload) for n in sent] == [
        {"customer_id": customer["id"], "email": "ada@example.com"}
    ]


def test_a_transfer_notifies_only_when_the_enclosing_unit_commits(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id
        bob = customers.register_customer("Bob", "bob@example.com").account.id
        accounts.deposit(alice, 100)
        outbox.clear()

        with db.unit_of_work():
            transfers.transfer(alice, bob, 40)
            transfers.transfer(alice, bob, 10)
            assert outbox.sent() == [], "notified before the transaction committed"

        assert [n.payload["amount"] for n in outbox.sent("transfer.completed")] == [40, 10]


def test_a_transfer_rolled_back_by_the_enclosing_unit_never_notifies(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id
        bob = customers.register_customer("Bob", "bob@example.com").account.id
        accounts.deposit(alice, 100)
        outbox.clear()

        with db.unit_of_work() as uow:
            transfers.transfer(alice, bob, 40)
            uow.set_rollback()

        assert outbox.sent() == []
        assert accounts.get_account(alice).balance == 100
        assert accounts.get_account(bob).balance == 0


def test_a_full_outbox_keeps_the_newest_notifications_and_counts_the_dropped_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = Outbox(max_size=3)

    with caplog.at_level(logging.WARNING, logger="ledger.services.notifications"):
        for n in range(5):
            box.send("tick", n=n)

    assert [n.payload["n"] for n in box.sent()] == [2, 3, 4]
    assert box.dropped == 2
    assert [r.getMessage() for r in caplog.records] == [
        "the outbox is full (3 notifications): the oldest are being discarded"
    ]


def test_clearing_an_outbox_empties_it_and_resets_the_dropped_count() -> None:
    box = Outbox(max_size=1)
    box.send("tick")
    box.send("tock")

    box.clear()

    assert (box.sent(), box.dropped) == ([], 0)
    box.send("again")
    assert [n.kind for n in box.sent()] == ["again"]


def test_an_outbox_needs_room_for_one_notification() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Outbox(max_size=0)


def test_the_process_outbox_is_bounded() -> None:
    assert outbox.max_size == MAX_SIZE == 10_000
