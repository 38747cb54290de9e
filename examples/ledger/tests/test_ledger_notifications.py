"""Notifications go out through ``on_commit`` hooks: after COMMIT, and never otherwise."""

from __future__ import annotations

from flask import Flask

from ledger.database import db
from ledger.notifications import outbox
from ledger.services import accounts, customers, transfers
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
