"""Services outside HTTP: in an app context only, joined into a caller's unit, from the CLI."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_uow import NoActiveUnitOfWork
from ledger.adapter import DBAdapter
from ledger.database import db
from ledger.services import accounts, customers, reports, transfers
from ledger.services.errors import InsufficientFunds, NotFound, SameAccount, ValidationError


def test_services_work_without_a_request(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "ALICE@example.com")
        bob = customers.register_customer("Bob", "bob@example.com")
        accounts.deposit(alice.account.id, 300)

        result = transfers.transfer(alice.account.id, bob.account.id, 120)

        assert result.replayed is False
        assert customers.get_customer(alice.id).email == "alice@example.com"
        assert accounts.get_account(bob.account.id).balance == 120
        assert reports.account_statement(bob.account.id) == [result.transfer]


def test_services_called_in_one_unit_commit_together_or_not_at_all(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id

        with pytest.raises(InsufficientFunds), db.unit_of_work():
            bob = customers.register_customer("Bob", "bob@example.com").account.id
            accounts.deposit(alice, 50)
            transfers.transfer(alice, bob, 80)

        assert reports.ledger_totals().customers == 1
        assert accounts.get_account(alice).balance == 0


def test_services_check_their_arguments_like_the_http_layer(app: Flask) -> None:
    with app.app_context():
        alice = customers.register_customer("Alice", "alice@example.com").account.id

        with pytest.raises(SameAccount):
            transfers.transfer(alice, alice, 1)
        with pytest.raises(ValidationError):
            transfers.transfer(alice, alice + 1, 0)
        with pytest.raises(ValidationError):
            accounts.deposit(alice, True)
        with pytest.raises(ValidationError):
            customers.register_customer("", "x@example.com")
        with pytest.raises(NotFound):
            accounts.deposit(alice + 100, 5)


def test_the_adapter_refuses_to_run_outside_a_unit_of_work(app: Flask) -> None:
    with app.app_context(), pytest.raises(NoActiveUnitOfWork):
        DBAdapter().count_customers()


def test_the_report_command_prints_the_totals(app: Flask) -> None:
    with app.app_context():
        account = customers.register_customer("Alice", "alice@example.com").account.id
        accounts.deposit(account, 99)

    result = app.test_cli_runner().invoke(args=["ledger", "report"])

    assert result.exit_code == 0
    assert result.output.strip() == "customers=1 accounts=1 transfers=0 total_balance=99"
