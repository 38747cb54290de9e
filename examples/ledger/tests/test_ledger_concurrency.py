"""Many threads moving money at once: totals hold, nobody overdraws, keys apply once.

Threads call the services directly (each in its own app context, as a worker would), or use
a test client of their own; every unit of work runs on a real connection of the backend, so
these tests use ``threaded_app`` (real commits, on a scratch database of their own) instead
of the isolated ``app``.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from flask import Flask

from ledger.services import accounts, customers, reports, transfers
from ledger.services.errors import DuplicateEmail, InsufficientFunds
from ledger.services.notifications import outbox
from ledger.testing import LedgerClient, wait_for_deliveries

THREADS = 8
T = TypeVar("T")


@pytest.fixture
def app(threaded_app: Flask) -> Flask:
    """Units in several threads cannot share one test's isolation: commit for real."""
    return threaded_app


def _in_threads(app: Flask, work: Callable[[int], T]) -> list[T]:
    """Run ``work(n)`` for n in 0..THREADS-1 at once, each in its own thread and app context."""
    barrier = threading.Barrier(THREADS)

    def run(n: int) -> T:
        with app.app_context():
            barrier.wait(timeout=30)
            return work(n)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def test_concurrent_transfers_keep_the_total_and_never_overdraw(app: Flask) -> None:
    deposits = [500, 500, 300, 200]
    with app.app_context():
        ids = []
        for n, amount in enumerate(deposits):
            account_id = customers.register_customer(f"C{n}", f"c{n}@example.com").account.id
            accounts.deposit(account_id, amount)
            ids.append(account_id)

    def work(n: int) -> Counter[str]:
        rng = random.Random(n)
        outcome: Counter[str] = Counter()
        for _ in range(25):
            source, target = rng.sample(ids, 2)
            try:
                transfers.transfer(source, target, rng.randint(1, 250))
            except InsufficientFunds:
                outcome["refused"] += 1
            else:
                outcome["moved"] += 1
        return outcome

    outcome = sum(_in_threads(app, work), Counter())

    with app.app_context():
        totals = reports.ledger_totals()
        balances = {account_id: accounts.get_account(account_id).balance for account_id in ids}
        statements = {account_id: reports.account_statement(account_id) for account_id in ids}
    assert outcome["moved"] + outcome["refused"] == THREADS * 25
    assert outcome["moved"] > 0
    assert totals.total_balance == sum(deposits)
    assert totals.transfers == outcome["moved"]
    assert all(balance >= 0 for balance in balances.values())
    for account_id, deposit in zip(ids, deposits, strict=True):
        flows = sum(
            t.amount if t.to_account == account_id else -t.amount for t in statements[account_id]
        )
        assert balances[account_id] == deposit + flows
    wait_for_deliveries(app)
    assert len(outbox.sent("transfer.completed")) == outcome["moved"]


def test_transfers_in_opposite_directions_at_once_do_not_deadlock(app: Flask) -> None:
    with app.app_context():
        a = customers.register_customer("A", "a@example.com").account.id
        b = customers.register_customer("B", "b@example.com").account.id
        accounts.deposit(a, 10_000)
        accounts.deposit(b, 10_000)

    def work(n: int) -> None:
        for _ in range(20):
            source, target = (a, b) if n % 2 else (b, a)
            transfers.transfer(source, target, 7)

    _in_threads(app, work)

    with app.app_context():
        assert accounts.get_account(a).balance == accounts.get_account(b).balance == 10_000
        assert reports.ledger_totals().transfers == THREADS * 20


def test_concurrent_requests_with_one_idempotency_key_move_money_once(app: Flask) -> None:
    api = LedgerClient(app.test_client())
    alice, bob = api.open_account(1000), api.open_account()
    body = {"from_account": alice, "to_account": bob, "amount": 100}

    def work(n: int) -> tuple[int, object]:
        response = LedgerClient(app.test_client()).post(
            "/transfers", body, headers={"Idempotency-Key": "one-key"}
        )
        return response.status_code, response.get_json()

    results = _in_threads(app, work)

    assert {status for status, _ in results} == {201}
    assert len({repr(body) for _, body in results}) == 1
    assert (api.balance(alice), api.balance(bob)) == (900, 100)
    assert len(api.transfers_of(alice)) == 1
    wait_for_deliveries(app)
    assert len(outbox.sent("transfer.completed")) == 1


def test_concurrent_registrations_of_one_email_create_one_customer(app: Flask) -> None:
    def work(n: int) -> str:
        try:
            customers.register_customer(f"Twin {n}", "twin@example.com")
        except DuplicateEmail:
            return "duplicate"
        return "created"

    results = Counter(_in_threads(app, work))

    assert results == Counter({"created": 1, "duplicate": THREADS - 1})
    with app.app_context():
        assert reports.ledger_totals().customers == 1
